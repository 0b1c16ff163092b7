//! A stored event: the event plus its sequence number, id, time and place in the hash chain,
//! and the canonical encoding that the hash is computed over.
//!
//! Canonical encoding: the JSON object `{"seq","id","ts","kind","actor","target","level",
//! "detail","prev_hash"}` with keys in exactly that order, `detail`'s keys sorted (recursively),
//! no insignificant whitespace. `hash` is the hex SHA-256 of those bytes. The journal stores the
//! bytes as hashed, so verification never depends on re-encoding.

use super::event::{Actor, AuditEvent, Level};
use super::kind::AuditKind;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The hash before the first event: 64 zeros.
pub const GENESIS: [u8; 32] = [0; 32];

/// Longest `detail` kept, in bytes of JSON; longer ones are replaced by a note saying so.
pub const MAX_DETAIL: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub seq: u64,
    pub id: String,
    pub ts: String,
    /// The kind's dotted name as sealed. A string, not an [`AuditKind`]: a journal or a hub
    /// must carry (and verify) events of kinds a newer agent added; [`StoredEvent::audit_kind`]
    /// reads it as a kind this build knows.
    pub kind: String,
    pub actor: Actor,
    pub target: String,
    pub level: Level,
    pub detail: serde_json::Map<String, serde_json::Value>,
    pub prev_hash: String,
    pub hash: String,
}

/// The hashed part, in canonical key order. The detail is a map, or the same map already
/// encoded (sealing encodes it once, to measure it, and reuses those bytes).
#[derive(Serialize)]
struct Body<'a, D: Serialize + ?Sized> {
    seq: u64,
    id: &'a str,
    ts: &'a str,
    kind: &'a str,
    actor: &'a Actor,
    target: &'a str,
    level: Level,
    detail: &'a D,
    prev_hash: &'a str,
}

/// An event with its kind as a dotted name, ready to seal.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedEvent<'a> {
    pub kind: &'a str,
    pub actor: Actor,
    pub target: String,
    pub level: Level,
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// Why a stored record does not hold up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFault {
    /// Not a record at all (truncated, not JSON).
    Unreadable,
    /// Its sequence number is not the one it is stored under.
    WrongSeq,
    /// Its hash is not the hash of its content.
    HashMismatch,
    /// It does not follow the previous event's hash.
    BrokenChain,
}

impl RecordFault {
    /// What the fault means, for `audit verify`'s message.
    pub fn describe(self) -> &'static str {
        match self {
            RecordFault::Unreadable => "unreadable",
            RecordFault::WrongSeq => "stored under another sequence number",
            RecordFault::HashMismatch => "content does not match its hash",
            RecordFault::BrokenChain => "does not follow the previous record's hash",
        }
    }
}

/// A hash in lower-case hex. `hex::encode` builds its string a char at a time, which showed in
/// the journal's profile (it hexes two hashes for every event it seals).
fn hex_of(hash: &[u8]) -> String {
    let mut out = vec![0u8; hash.len() * 2];
    hex::encode_to_slice(hash, &mut out).expect("the buffer is twice the input");
    String::from_utf8(out).expect("hex digits are ASCII")
}

impl StoredEvent {
    /// Seals `event` as number `seq` after `prev_hash`; returns it with its stored bytes.
    pub fn seal(event: AuditEvent, seq: u64, id: String, ts: String, prev_hash: &[u8; 32]) -> (StoredEvent, Vec<u8>) {
        let named = NamedEvent {
            kind: event.kind.as_str(),
            actor: event.actor,
            target: event.target,
            level: event.level,
            detail: event.detail,
        };
        StoredEvent::seal_named(named, seq, id, ts, prev_hash)
    }

    /// [`StoredEvent::seal`] of an event whose kind is given by name (the hub's own journal
    /// seals [`super::HubEventKind`]s in the same format).
    pub fn seal_named(
        event: NamedEvent<'_>,
        seq: u64,
        id: String,
        ts: String,
        prev_hash: &[u8; 32],
    ) -> (StoredEvent, Vec<u8>) {
        let (detail, encoded_detail) = bounded_detail(event.detail);
        let prev_hash = hex_of(prev_hash);
        let body = Body {
            seq,
            id: &id,
            ts: &ts,
            kind: event.kind,
            actor: &event.actor,
            target: &event.target,
            level: event.level,
            detail: &*encoded_detail,
            prev_hash: &prev_hash,
        };
        let bytes = serde_json::to_vec(&body).expect("an event always encodes");
        let hash = Sha256::digest(&bytes);
        let stored = StoredEvent {
            seq,
            id,
            ts,
            kind: event.kind.to_string(),
            actor: event.actor,
            target: event.target,
            level: event.level,
            detail,
            prev_hash,
            hash: hex_of(&hash),
        };
        let mut value = Vec::with_capacity(32 + bytes.len());
        value.extend_from_slice(&hash);
        value.extend_from_slice(&bytes);
        (stored, value)
    }

    /// Reads stored bytes (32-byte hash, then the canonical body) and checks them against the
    /// key they were stored under and the hash before them.
    pub fn open(seq: u64, value: &[u8], expected_prev: &[u8; 32]) -> Result<StoredEvent, RecordFault> {
        let event = StoredEvent::decode(value).ok_or(RecordFault::Unreadable)?;
        let body = &value[32..];
        if event.seq != seq {
            return Err(RecordFault::WrongSeq);
        }
        if Sha256::digest(body)[..] != value[..32] {
            return Err(RecordFault::HashMismatch);
        }
        if event.prev_hash != hex_of(expected_prev) {
            return Err(RecordFault::BrokenChain);
        }
        Ok(event)
    }

    /// Reads stored bytes without checking them.
    pub fn decode(value: &[u8]) -> Option<StoredEvent> {
        let hash = value.get(..32)?;
        let b: OwnedBody = serde_json::from_slice(value.get(32..)?).ok()?;
        Some(StoredEvent {
            seq: b.seq,
            id: b.id,
            ts: b.ts,
            kind: b.kind,
            actor: b.actor,
            target: b.target,
            level: b.level,
            detail: b.detail,
            prev_hash: b.prev_hash,
            hash: hex_of(hash),
        })
    }

    /// The kind, if this build knows it.
    pub fn audit_kind(&self) -> Option<AuditKind> {
        AuditKind::parse(&self.kind)
    }

    /// Whether the hash is the hash of the canonical encoding of the fields and follows
    /// `prev_hash` (for events read back from JSON, where the stored bytes are not at hand).
    pub fn hash_holds(&self) -> bool {
        let body = Body {
            seq: self.seq,
            id: &self.id,
            ts: &self.ts,
            kind: &self.kind,
            actor: &self.actor,
            target: &self.target,
            level: self.level,
            detail: &self.detail,
            prev_hash: &self.prev_hash,
        };
        let bytes = serde_json::to_vec(&body).expect("an event always encodes");
        hex_of(&Sha256::digest(&bytes)) == self.hash
    }

    /// The hash as bytes.
    pub fn hash_bytes(&self) -> [u8; 32] {
        hash_from_hex(&self.hash)
    }
}

/// A hash written in hex as bytes; [`GENESIS`] for anything that is not 64 hex digits.
pub fn hash_from_hex(text: &str) -> [u8; 32] {
    let mut out = GENESIS;
    if hex::decode_to_slice(text, &mut out).is_err() {
        out = GENESIS;
    }
    out
}

/// [`Body`] for reading back (strings in stored JSON may be escaped, so they are owned).
#[derive(Deserialize)]
struct OwnedBody {
    seq: u64,
    id: String,
    ts: String,
    kind: String,
    actor: Actor,
    target: String,
    level: Level,
    detail: serde_json::Map<String, serde_json::Value>,
    prev_hash: String,
}

/// The detail, or a note in its place when it is too large, with its encoding.
fn bounded_detail(
    detail: serde_json::Map<String, serde_json::Value>,
) -> (serde_json::Map<String, serde_json::Value>, Box<RawValue>) {
    let size = match serde_json::value::to_raw_value(&detail) {
        Ok(encoded) if encoded.get().len() <= MAX_DETAIL => return (detail, encoded),
        Ok(encoded) => encoded.get().len(),
        Err(_) => usize::MAX,
    };
    let mut note = serde_json::Map::new();
    note.insert("truncated".into(), serde_json::Value::Bool(true));
    note.insert("original_bytes".into(), serde_json::Value::from(size));
    let encoded = serde_json::value::to_raw_value(&note).expect("a note of a bool and a number encodes");
    (note, encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: AuditKind) -> AuditEvent {
        AuditEvent::new(kind, Actor::user("ann"), "/device-editor/flows")
            .with("zeta", 1)
            .with("alpha", serde_json::json!({"b": 2, "a": 1}))
    }

    #[test]
    fn a_hash_reads_back_from_hex_and_anything_else_is_genesis() {
        let hash: [u8; 32] = Sha256::digest(b"x").into();
        assert_eq!(hash_from_hex(&hex_of(&hash)), hash);
        assert_eq!(hash_from_hex(&hex_of(&hash).to_uppercase()), hash);
        for bad in ["", "ab", &"g".repeat(64), &hex_of(&hash)[..62], &format!("{}00", hex_of(&hash))] {
            assert_eq!(hash_from_hex(bad), GENESIS, "{bad:?}");
        }
    }

    #[test]
    fn encoding_has_fixed_key_order_and_sorted_detail() {
        let (_, bytes) = StoredEvent::seal(
            event(AuditKind::AdminWrite),
            7,
            "id-7".into(),
            "2026-11-27T00:00:00.000Z".into(),
            &GENESIS,
        );
        let text = std::str::from_utf8(&bytes[32..]).unwrap();
        assert_eq!(
            text,
            r#"{"seq":7,"id":"id-7","ts":"2026-11-27T00:00:00.000Z","kind":"admin.write","actor":"user:ann","target":"/device-editor/flows","level":"instance","detail":{"alpha":{"a":1,"b":2},"zeta":1},"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000"}"#
        );
        assert_eq!(hex::encode(&bytes[..32]), hex::encode(Sha256::digest(text.as_bytes())));
    }

    #[test]
    fn opening_checks_key_hash_and_chain() {
        let (first, v1) = StoredEvent::seal(event(AuditKind::AuthLogin), 1, "i1".into(), "t".into(), &GENESIS);
        let (second, v2) =
            StoredEvent::seal(event(AuditKind::AuthFailed), 2, "i2".into(), "t".into(), &first.hash_bytes());
        assert_eq!(StoredEvent::open(1, &v1, &GENESIS).unwrap(), first);
        assert_eq!(StoredEvent::open(2, &v2, &first.hash_bytes()).unwrap(), second);
        assert_eq!(StoredEvent::open(3, &v2, &first.hash_bytes()).unwrap_err(), RecordFault::WrongSeq);
        assert_eq!(StoredEvent::open(2, &v2, &GENESIS).unwrap_err(), RecordFault::BrokenChain);
        let mut tampered = v2.clone();
        let at = tampered.len() - 90;
        tampered[at] ^= 1;
        assert!(matches!(
            StoredEvent::open(2, &tampered, &first.hash_bytes()).unwrap_err(),
            RecordFault::HashMismatch | RecordFault::Unreadable
        ));
        assert_eq!(StoredEvent::open(2, &v2[..40], &first.hash_bytes()).unwrap_err(), RecordFault::Unreadable);
    }

    #[test]
    fn oversized_details_are_replaced_by_a_note() {
        let big = AuditEvent::new(AuditKind::AgentStarted, Actor::System, "t").with("blob", "a".repeat(MAX_DETAIL * 2));
        let (stored, _) = StoredEvent::seal(big, 1, "i".into(), "t".into(), &GENESIS);
        assert_eq!(stored.detail["truncated"], true);
    }

    #[test]
    fn an_event_read_back_from_json_still_proves_its_hash() {
        let (first, _) = StoredEvent::seal(event(AuditKind::AdminWrite), 1, "i1".into(), "t".into(), &GENESIS);
        let json = serde_json::to_string(&first).unwrap();
        let back: StoredEvent = serde_json::from_str(&json).unwrap();
        assert!(back.hash_holds());
        assert_eq!(back.audit_kind(), Some(AuditKind::AdminWrite));
        let mut changed = back.clone();
        changed.target = "/elsewhere".into();
        assert!(!changed.hash_holds());
        let mut unknown = back;
        unknown.kind = "future.kind".into();
        assert_eq!(unknown.audit_kind(), None);
    }
}
