//! Whether the journal can make events durable, and what it could not record while it could not.
//!
//! ```text
//!            a write fails (commit, ack, or the store cannot be opened at start)
//!   ok ─────────────────────────────────────────────────────────▶ failing
//!    ▲                                                              │  │ a retry fails: wait longer
//!    │   a retry commits the audit.gap event (it is the probe)      │  │ (RETRY_MIN doubling to RETRY_MAX)
//!    └──────────────────────────────────────────────────────────────┘◀─┘
//! ```
//!
//! While failing, the journal writes nothing but its retries: every event offered is answered
//! "not recorded" at once and counted here — failed authentications with the time of the first
//! and the last, other kinds by kind — and so is every action refused before it happened
//! (`on_failure = "deny"`). The retry's `audit.gap` event carries those counts, so the journal
//! says what it missed, in order, as its first event after the outage.
//!
//! Pure: the journal thread feeds in what happened with the time, and asks when to retry and
//! which event closes the outage. No clock, no I/O.

use redtether_proto::audit::{Actor, AuditEvent, AuditKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

/// The first retry comes this long after a failure; each failed retry doubles the wait ...
pub const RETRY_MIN: Duration = Duration::from_millis(250);
/// ... up to this, so that freed space is noticed within seconds but a long outage costs little.
pub const RETRY_MAX: Duration = Duration::from_secs(2);

/// The journal's state as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    /// Events are made durable.
    #[default]
    Ok,
    /// The last write failed; nothing is recorded until a retry succeeds.
    Failing,
}

/// What an action that must leave an audit event does while the journal cannot persist
/// (`[audit] on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Refused (503 `audit_unavailable`, or a refusal on the control socket): nothing is
    /// answered as done without its event on disk.
    #[default]
    Deny,
    /// Goes ahead; the event is only counted in the `audit.gap` event.
    Allow,
}

/// Whether an action that must leave an audit event may go ahead in `state`.
pub fn admits(on_failure: OnFailure, state: JournalState) -> bool {
    state == JournalState::Ok || on_failure == OnFailure::Allow
}

/// The health as the gate reads it and `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthView {
    pub state: JournalState,
    /// When the journal started failing (RFC 3339).
    pub failing_since: Option<String>,
    /// The most recent error while failing.
    pub last_error: Option<String>,
    /// Failed authentications not recorded during this outage.
    pub failed_logins: u64,
    /// Actions refused during this outage.
    pub refused: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    outage: Option<Outage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Outage {
    since: SystemTime,
    last_error: String,
    failed_logins: u64,
    first_failed_login: Option<SystemTime>,
    last_failed_login: Option<SystemTime>,
    refused: BTreeMap<AuditKind, u64>,
    unrecorded: BTreeMap<AuditKind, u64>,
    /// Retries that failed so far.
    retries: u32,
    retry_at: Instant,
}

impl Health {
    pub fn state(&self) -> JournalState {
        if self.outage.is_some() { JournalState::Failing } else { JournalState::Ok }
    }

    /// A write failed at `now` (wall clock) / `at` (monotonic): the journal is failing from now,
    /// or still (a retry failed), and tries again later, each time waiting longer.
    pub fn write_failed(&mut self, error: &str, now: SystemTime, at: Instant) {
        match &mut self.outage {
            None => {
                self.outage = Some(Outage {
                    since: now,
                    last_error: error.to_string(),
                    failed_logins: 0,
                    first_failed_login: None,
                    last_failed_login: None,
                    refused: BTreeMap::new(),
                    unrecorded: BTreeMap::new(),
                    retries: 0,
                    retry_at: at + retry_delay(0),
                })
            }
            Some(outage) => {
                outage.last_error = error.to_string();
                outage.retries = outage.retries.saturating_add(1);
                outage.retry_at = at + retry_delay(outage.retries);
            }
        }
    }

    /// An event offered at `now` was not recorded (its commit failed, or the journal was
    /// failing). Only counted while failing: an event is not recorded only then.
    pub fn not_recorded(&mut self, kind: AuditKind, now: SystemTime) {
        let Some(outage) = &mut self.outage else { return };
        if kind == AuditKind::AuthFailed {
            outage.failed_logins += 1;
            outage.first_failed_login.get_or_insert(now);
            outage.last_failed_login = Some(now);
        } else {
            *outage.unrecorded.entry(kind).or_default() += 1;
        }
    }

    /// An action that would have left an event of `kind` was refused before it happened.
    pub fn refused(&mut self, kind: AuditKind) {
        if let Some(outage) = &mut self.outage {
            *outage.refused.entry(kind).or_default() += 1;
        }
    }

    /// When to try to write again, while failing.
    pub fn retry_at(&self) -> Option<Instant> {
        self.outage.as_ref().map(|o| o.retry_at)
    }

    /// The event that closes the outage if it can be committed at `now`; committing it is the
    /// retry.
    pub fn gap(&self, now: SystemTime) -> Option<AuditEvent> {
        let o = self.outage.as_ref()?;
        let by_kind = |counts: &BTreeMap<AuditKind, u64>| -> serde_json::Map<String, serde_json::Value> {
            counts.iter().map(|(kind, n)| (kind.as_str().to_string(), (*n).into())).collect()
        };
        Some(
            AuditEvent::new(AuditKind::AuditGap, Actor::System, "audit")
                .with("since", millis(o.since))
                .with("until", millis(now))
                .with("error", o.last_error.as_str())
                .with("failed_logins", o.failed_logins)
                .with("first", o.first_failed_login.map(millis))
                .with("last", o.last_failed_login.map(millis))
                .with("refused", by_kind(&o.refused))
                .with("unrecorded", by_kind(&o.unrecorded)),
        )
    }

    /// The gap event is in the journal: back to ok, the counts start over.
    pub fn recovered(&mut self) {
        self.outage = None;
    }

    pub fn view(&self) -> HealthView {
        match &self.outage {
            None => HealthView::default(),
            Some(o) => HealthView {
                state: JournalState::Failing,
                failing_since: Some(redtether_proto::time::format_seconds(o.since)),
                last_error: Some(o.last_error.clone()),
                failed_logins: o.failed_logins,
                refused: o.refused.values().sum(),
            },
        }
    }
}

/// The wait before retry number `retries` (0: the first).
pub fn retry_delay(retries: u32) -> Duration {
    RETRY_MIN.saturating_mul(1u32 << retries.min(16)).min(RETRY_MAX)
}

/// An event's time as events write theirs (`ts`).
fn millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_762_800 + secs)
    }

    #[test]
    fn deny_refuses_only_while_failing_and_allow_never() {
        assert!(admits(OnFailure::Deny, JournalState::Ok));
        assert!(!admits(OnFailure::Deny, JournalState::Failing));
        assert!(admits(OnFailure::Allow, JournalState::Failing));
        assert_eq!(OnFailure::default(), OnFailure::Deny, "the safe choice is the default");
    }

    #[test]
    fn a_failed_write_starts_an_outage_and_failed_retries_back_off() {
        let start = Instant::now();
        let mut h = Health::default();
        assert_eq!((h.state(), h.retry_at()), (JournalState::Ok, None));
        h.write_failed("No space left on device", t(0), start);
        assert_eq!(h.state(), JournalState::Failing);
        assert_eq!(h.retry_at(), Some(start + RETRY_MIN));
        let mut waits = Vec::new();
        for n in 1..=6u64 {
            let at = start + Duration::from_secs(n);
            h.write_failed("still full", t(n), at);
            waits.push(h.retry_at().unwrap() - at);
        }
        assert_eq!(waits[0], RETRY_MIN * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "never shorter: {waits:?}");
        assert_eq!(*waits.last().unwrap(), RETRY_MAX, "capped");
        let view = h.view();
        assert_eq!(view.failing_since.as_deref(), Some("2026-11-27T07:00:00Z"), "since the first failure");
        assert_eq!(view.last_error.as_deref(), Some("still full"), "the latest error");
    }

    #[test]
    fn the_gap_counts_failed_logins_with_first_and_last_and_the_rest_by_kind() {
        let mut h = Health::default();
        h.not_recorded(AuditKind::AuthFailed, t(0));
        assert_eq!(h, Health::default(), "nothing is counted while ok: nothing was lost");
        h.write_failed("full", t(1), Instant::now());
        for s in [2, 3, 7] {
            h.not_recorded(AuditKind::AuthFailed, t(s));
        }
        h.not_recorded(AuditKind::NodeRedExited, t(4));
        h.refused(AuditKind::AdminWrite);
        h.refused(AuditKind::AdminWrite);
        h.refused(AuditKind::AuthLogin);
        assert_eq!((h.view().failed_logins, h.view().refused), (3, 3));
        let gap = h.gap(t(9)).unwrap();
        assert_eq!(gap.kind, AuditKind::AuditGap);
        let d = serde_json::Value::Object(gap.detail);
        assert_eq!(d["failed_logins"], 3);
        assert_eq!(d["first"], "2026-11-27T07:00:02.000Z");
        assert_eq!(d["last"], "2026-11-27T07:00:07.000Z");
        assert_eq!(d["since"], "2026-11-27T07:00:01.000Z");
        assert_eq!(d["until"], "2026-11-27T07:00:09.000Z");
        assert_eq!(d["error"], "full");
        assert_eq!(d["refused"], serde_json::json!({"admin.write": 2, "auth.login": 1}));
        assert_eq!(d["unrecorded"], serde_json::json!({"nodered.exited": 1}));
    }

    #[test]
    fn an_outage_without_failed_logins_says_so_with_nulls() {
        let mut h = Health::default();
        h.write_failed("full", t(0), Instant::now());
        let d = serde_json::Value::Object(h.gap(t(1)).unwrap().detail);
        assert_eq!((d["failed_logins"].as_u64(), d["first"].is_null(), d["last"].is_null()), (Some(0), true, true));
    }

    #[test]
    fn recovery_ends_the_outage_and_the_next_one_counts_from_zero() {
        let mut h = Health::default();
        h.write_failed("full", t(0), Instant::now());
        h.not_recorded(AuditKind::AuthFailed, t(1));
        h.recovered();
        assert_eq!((h.state(), h.gap(t(2)), h.view()), (JournalState::Ok, None, HealthView::default()));
        h.write_failed("full again", t(3), Instant::now());
        assert_eq!(h.view().failed_logins, 0);
        assert!(h.retry_at().is_some(), "the new outage is retried too");
    }
}
