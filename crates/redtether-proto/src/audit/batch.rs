//! What makes a delivered batch acceptable: events in strictly increasing sequence order, each
//! with an id the hub can key it by.

use super::StoredEvent;

/// Why a batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("event {index} has no usable id")]
    BadId { index: usize },
    #[error("event {index}: seq {seq} does not follow {last}")]
    OutOfOrder { index: usize, seq: u64, last: u64 },
}

/// Longest event id accepted (a UUIDv7 is 36 characters).
pub const MAX_ID: usize = 64;

/// Checks the order and ids of `events`. Pure, so it is tested on its own.
pub fn check_batch(events: &[StoredEvent]) -> Result<(), BatchError> {
    let mut last: Option<u64> = None;
    for (index, e) in events.iter().enumerate() {
        if e.id.is_empty() || e.id.len() > MAX_ID {
            return Err(BatchError::BadId { index });
        }
        if let Some(last) = last
            && e.seq <= last
        {
            return Err(BatchError::OutOfOrder { index, seq: e.seq, last });
        }
        last = Some(e.seq);
    }
    Ok(())
}

/// What storing one delivered batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub stored: usize,
    pub duplicates: usize,
    /// The seq to acknowledge: the batch's last (0 for an empty batch).
    pub ack: u64,
}

/// The events of a checked batch that the store does not hold yet, and what acknowledging the
/// batch means. An event is the same event when its (seq, id) is: one resent after a lost
/// acknowledgement is counted as a duplicate and kept once. `held` asks the store.
pub fn new_events<E>(
    events: &[StoredEvent],
    mut held: impl FnMut(u64, &str) -> Result<bool, E>,
) -> Result<(Vec<&StoredEvent>, Ingested), E> {
    let mut fresh = Vec::with_capacity(events.len());
    let mut duplicates = 0;
    for event in events {
        if held(event.seq, &event.id)? {
            duplicates += 1;
        } else {
            fresh.push(event);
        }
    }
    let ack = events.last().map_or(0, |e| e.seq);
    let ingested = Ingested { stored: fresh.len(), duplicates, ack };
    Ok((fresh, ingested))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditEvent, AuditKind, GENESIS};

    fn event(seq: u64, id: &str) -> StoredEvent {
        let e = AuditEvent::new(AuditKind::AgentStarted, Actor::System, "agent");
        StoredEvent::seal(e, seq, id.into(), "t".into(), &GENESIS).0
    }

    #[test]
    fn audit_batches_must_be_ordered_and_identified() {
        assert_eq!(check_batch(&[event(1, "a"), event(3, "b")]), Ok(()));
        assert!(check_batch(&[event(2, "a"), event(2, "b")]).is_err(), "repeated seq");
        assert_eq!(
            check_batch(&[event(3, "a"), event(1, "b")]),
            Err(BatchError::OutOfOrder { index: 1, seq: 1, last: 3 })
        );
        assert_eq!(check_batch(&[event(1, "")]), Err(BatchError::BadId { index: 0 }));
        assert!(check_batch(&[event(1, &"x".repeat(65))]).is_err(), "id too long");
        assert_eq!(check_batch(&[]), Ok(()));
    }

    #[test]
    fn events_without_seq_or_id_do_not_even_decode() {
        for junk in [r#"{"id":"a"}"#, r#"{"seq":1}"#, r#"{"seq":-1,"id":"a"}"#] {
            assert!(serde_json::from_str::<StoredEvent>(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn events_already_held_are_duplicates() {
        let batch = [event(1, "a"), event(2, "b"), event(3, "c")];
        let held = [(2u64, "b".to_string())];
        let (fresh, done) = new_events(&batch, |seq, id| {
            Ok::<_, std::convert::Infallible>(held.iter().any(|(s, i)| *s == seq && i == id))
        })
        .unwrap();
        assert_eq!(fresh.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(done, Ingested { stored: 2, duplicates: 1, ack: 3 });
        // The same seq with another id is another event (a journal that was reset).
        let other = [event(2, "z")];
        let (fresh, _) = new_events(&other, |seq, id| {
            Ok::<_, std::convert::Infallible>(held.iter().any(|(s, i)| *s == seq && i == id))
        })
        .unwrap();
        assert_eq!(fresh.len(), 1);
    }
}
