//! Selecting events for `audit list`: by kind (exact, or a dotted prefix such as `auth`) and
//! by a starting sequence number or time.

use super::StoredEvent;
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    Seq(u64),
    Time(SystemTime),
}

/// Why a starting point could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SinceError {
    /// Not digits, and not a time either; the time's parse error says what is wrong with it.
    #[error("{text:?} is neither a sequence number nor an RFC 3339 time such as 2026-11-27T08:00:00Z")]
    Unreadable {
        text: String,
        #[source]
        source: humantime::TimestampError,
    },
}

impl Since {
    /// `123` is a sequence number; anything else must be an RFC 3339 time.
    pub fn parse(text: &str) -> Result<Since, SinceError> {
        if let Ok(seq) = text.parse::<u64>() {
            return Ok(Since::Seq(seq));
        }
        humantime::parse_rfc3339_weak(text)
            .map(Since::Time)
            .map_err(|source| SinceError::Unreadable { text: text.to_string(), source })
    }

    /// The sequence number to read after.
    pub fn read_after(&self) -> u64 {
        match self {
            Since::Seq(seq) => seq.saturating_sub(1),
            Since::Time(_) => 0,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub kind: Option<String>,
    pub since: Option<Since>,
}

impl Filter {
    pub fn matches(&self, event: &StoredEvent) -> bool {
        let kind_ok = self
            .kind
            .as_deref()
            .is_none_or(|k| event.kind == k || event.kind.strip_prefix(k).is_some_and(|rest| rest.starts_with('.')));
        let since_ok = match &self.since {
            None => true,
            Some(Since::Seq(seq)) => event.seq >= *seq,
            Some(Since::Time(t)) => humantime::parse_rfc3339_weak(&event.ts).is_ok_and(|ts| ts >= *t),
        };
        kind_ok && since_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditEvent, AuditKind};

    fn stored(seq: u64, kind: &str, ts: &str) -> StoredEvent {
        let event = AuditEvent::new(AuditKind::AgentStarted, Actor::System, "t");
        let (mut e, _) = StoredEvent::seal(event, seq, "i".into(), ts.into(), &[0; 32]);
        // A kind by name: the filter must also work on kinds this build does not know.
        e.kind = kind.into();
        e.ts = ts.into();
        e
    }

    #[test]
    fn kind_matches_exactly_or_by_dotted_prefix() {
        let f = Filter { kind: Some("auth".into()), since: None };
        assert!(f.matches(&stored(1, "auth.failed", "2026-01-01T00:00:00.000Z")));
        assert!(!f.matches(&stored(1, "authz.x", "2026-01-01T00:00:00.000Z")));
        let f = Filter { kind: Some("auth.failed".into()), since: None };
        assert!(f.matches(&stored(1, "auth.failed", "2026-01-01T00:00:00.000Z")));
        assert!(!f.matches(&stored(1, "auth.rate_limited", "2026-01-01T00:00:00.000Z")));
    }

    #[test]
    fn since_takes_a_sequence_number_or_a_time() {
        assert_eq!(Since::parse("42").unwrap(), Since::Seq(42));
        assert!(Since::parse("yesterday").is_err());
        let f = Filter { kind: None, since: Some(Since::parse("2026-11-27T08:00:00Z").unwrap()) };
        assert!(f.matches(&stored(1, "x", "2026-11-27T08:00:00.000Z")));
        assert!(!f.matches(&stored(1, "x", "2026-11-27T07:59:59.999Z")));
        let f = Filter { kind: None, since: Some(Since::Seq(5)) };
        assert!(
            f.matches(&stored(5, "x", "2026-01-01T00:00:00.000Z"))
                && !f.matches(&stored(4, "x", "2026-01-01T00:00:00.000Z"))
        );
    }
}
