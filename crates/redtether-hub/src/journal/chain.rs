//! The journal file's format and its verification, without I/O: one event per line, each the
//! JSON of a [`StoredEvent`] (the device journal's format: `seq`, `id`, `ts`, `kind`, `actor`,
//! `target`, `level`, `detail`, `prev_hash`, `hash`). The hash covers the canonical encoding of
//! the fields, so it is recomputed from the parsed line; a line that is not JSON, or whose
//! fields do not give its hash, or that does not follow the line before, breaks the chain there.

use redtether_proto::audit::{GENESIS, RecordFault, StoredEvent};
use serde::{Deserialize, Serialize};

/// What walking the chain found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Events that hold up, from the first line on.
    pub checked: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The first event that does not hold up: its sequence number (the one it should have
    /// had when its line cannot be read) and why.
    pub first_bad: Option<(u64, String)>,
}

/// Where appending continues after the lines read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub last_seq: u64,
    pub last_hash: [u8; 32],
}

impl Default for Head {
    fn default() -> Head {
        Head { last_seq: 0, last_hash: GENESIS }
    }
}

/// Checks one line as event number `seq` following `prev`.
pub fn check_line(line: &[u8], seq: u64, prev: &[u8; 32]) -> Result<StoredEvent, RecordFault> {
    let event: StoredEvent = serde_json::from_slice(line).map_err(|_| RecordFault::Unreadable)?;
    if event.seq != seq {
        return Err(RecordFault::WrongSeq);
    }
    if !event.hash_holds() {
        return Err(RecordFault::HashMismatch);
    }
    if event.prev_hash != hex::encode(prev) {
        return Err(RecordFault::BrokenChain);
    }
    Ok(event)
}

/// Walks every complete line of `text` (a last line without its newline was never finished,
/// so it is not part of the journal).
pub fn verify(text: &[u8]) -> Verification {
    let mut v = Verification { checked: 0, first_seq: None, last_seq: None, first_bad: None };
    let mut prev = GENESIS;
    for (i, line) in complete_lines(text).enumerate() {
        let seq = i as u64 + 1;
        match check_line(line, seq, &prev) {
            Ok(event) => {
                prev = event.hash_bytes();
                v.checked += 1;
                v.first_seq.get_or_insert(seq);
                v.last_seq = Some(seq);
            }
            Err(fault) => {
                v.first_bad = Some((seq, fault.describe().to_string()));
                break;
            }
        }
    }
    v
}

/// Where a journal continues: after its last complete line, whatever the lines before hold
/// (a broken chain is for `verify` to report; the hub keeps recording after it). Also the byte
/// length of the complete lines, so an unfinished last line can be cut off.
pub fn head(text: &[u8]) -> (Head, usize) {
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut head = Head::default();
    let count = complete_lines(text).count() as u64;
    if let Some(last) = complete_lines(text).last() {
        head.last_seq = count;
        if let Ok(event) = serde_json::from_slice::<StoredEvent>(last) {
            head.last_seq = event.seq.max(count);
            head.last_hash = event.hash_bytes();
        }
    }
    (head, complete)
}

/// The lines that end in a newline.
pub fn complete_lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    text[..complete].split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redtether_proto::audit::{Actor, Level, NamedEvent};

    fn journal(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = GENESIS;
        for seq in 1..=n {
            let event = NamedEvent {
                kind: "operator.login",
                actor: Actor::user("ann"),
                target: "hub".into(),
                level: Level::Instance,
                detail: serde_json::Map::new(),
            };
            let (stored, _) =
                StoredEvent::seal_named(event, seq, format!("id-{seq}"), "2026-12-05T00:00:00.000Z".into(), &prev);
            prev = stored.hash_bytes();
            out.extend(serde_json::to_vec(&stored).unwrap());
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn an_intact_journal_verifies() {
        let v = verify(&journal(3));
        assert_eq!((v.checked, v.first_seq, v.last_seq, v.first_bad), (3, Some(1), Some(3), None));
        assert_eq!(verify(b"").checked, 0);
    }

    #[test]
    fn any_changed_byte_is_found_at_its_event() {
        let text = journal(3);
        let second = text.iter().position(|&b| b == b'\n').unwrap() + 1;
        let line_len = text[second..].iter().position(|&b| b == b'\n').unwrap();
        for offset in 0..line_len {
            let mut bad = text.clone();
            bad[second + offset] ^= 0x01;
            let v = verify(&bad);
            assert_eq!(v.first_bad.as_ref().map(|b| b.0), Some(2), "byte {offset} of event 2");
            assert_eq!(v.checked, 1);
        }
    }

    #[test]
    fn removed_or_reordered_events_break_the_chain() {
        let text = journal(3);
        let lines: Vec<&[u8]> = complete_lines(&text).collect();
        let joined = |parts: &[&[u8]]| parts.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect::<Vec<u8>>();
        let without_second = joined(&[lines[0], lines[2]]);
        assert_eq!(verify(&without_second).first_bad.unwrap().0, 2);
        let swapped = joined(&[lines[1], lines[0]]);
        assert_eq!(verify(&swapped).first_bad.unwrap().0, 1);
    }

    #[test]
    fn an_unfinished_last_line_is_not_part_of_the_journal() {
        let mut text = journal(2);
        let full = text.len();
        text.extend_from_slice(b"{\"seq\":3,\"id\"");
        assert_eq!(verify(&text).first_bad, None);
        let (head, complete) = head(&text);
        assert_eq!((head.last_seq, complete), (2, full));
        assert_eq!(head.last_hash, verify_last_hash(&journal(2)));
    }

    fn verify_last_hash(text: &[u8]) -> [u8; 32] {
        let last = complete_lines(text).last().unwrap();
        serde_json::from_slice::<StoredEvent>(last).unwrap().hash_bytes()
    }
}
