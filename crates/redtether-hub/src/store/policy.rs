//! Device policies and the bearer tokens they carry, in the hub's store.
//!
//! Per device the hub keeps only its newest policy: the operator's document without tokens,
//! the signed envelope (that document plus the digest of every token the hub made for the
//! device), and what the device said about it. Tokens live in their own tree, as SHA-256
//! digests only, because they change without the operator's document changing: every token
//! change makes a new policy, since a token reaches a device only inside one.
//!
//! Every change goes through [`SledStore::make_policy`], which holds one lock from reading the
//! last number to writing the next: of two operators changing a device's policy at once, each
//! gets its own number and the stored policy is the higher one. The record and the token change
//! are written in one sled transaction, so a crash never leaves a token the newest policy does
//! not account for.

use super::{SledStore, StoreError, decode, device_key, encode};
use redtether_proto::policy::{FieldError, Policy, PolicyDocument, PolicyToken};
use redtether_proto::wire::{PolicyReport, PolicyState};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// The newest policy made for a device, and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub device: String,
    pub number: u64,
    /// The operator's document; its `tokens` are always empty (they are kept apart).
    pub desired: PolicyDocument,
    /// [`PolicyDocument::hash`] of the document that was signed (desired plus token digests):
    /// what the device reports back when it enforces it.
    pub hash: String,
    /// The signed policy, as sent to the device.
    pub envelope: String,
    pub state: PolicyState,
    /// The device's reason for a refusal.
    pub reason: Option<String>,
    /// Unix seconds when the device said it enforces this policy.
    pub applied_at: Option<u64>,
    /// Unix seconds.
    pub made_at: u64,
    /// The operator whose change made it.
    pub made_by: String,
    /// The group whose policy this is; `None` for the device's own, which wins over any
    /// group's.
    #[serde(default)]
    pub group: Option<String>,
}

/// A bearer token the hub made for a device. The token itself was shown once and not kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubTokenRecord {
    pub name: String,
    /// SHA-256 of the token, lower-case hex: what the device checks a presented token against.
    pub sha256: String,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
    pub scope: Option<String>,
    pub created_by: String,
}

impl HubTokenRecord {
    fn policy_token(&self) -> PolicyToken {
        PolicyToken {
            name: self.name.clone(),
            sha256: self.sha256.clone(),
            expires: self.expires,
            scope: self.scope.clone(),
        }
    }
}

/// What a new policy is made for.
#[derive(Debug, Clone)]
pub enum PolicyChange {
    /// An operator's new document for the device (its `tokens` are ignored: tokens change only
    /// by token).
    Document(PolicyDocument),
    /// The device's group's document, for a member without a policy of its own.
    Group {
        group: String,
        document: PolicyDocument,
    },
    TokenAdded(HubTokenRecord),
    TokenRevoked(String),
}

/// A policy just made, and the document it replaces (for the `changes` of `policy.changed`).
#[derive(Debug)]
pub struct MadePolicy {
    pub record: PolicyRecord,
    /// The signed document: desired plus token digests.
    pub document: PolicyDocument,
    /// The previous signed document, if there was one.
    pub previous: Option<PolicyDocument>,
}

/// What a device's answer did to the stored policy.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyUpdate {
    /// The newest policy's state changed to this.
    Changed(Box<PolicyRecord>),
    /// The newest policy already stood so.
    Unchanged,
    /// The answer is about another policy than the newest (an older one, answered late): the
    /// newest number, if any.
    NotNewest(Option<u64>),
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A token can reach the device only inside a policy, and none was set.
    #[error("no policy was set for the device")]
    NoPolicy,
    /// The device has a token with this name.
    #[error("a token named {0:?} exists")]
    TokenExists(String),
    /// The device has no token with this name.
    #[error("no token named {0:?}")]
    UnknownToken(String),
    /// The document with the tokens added is not one a device would enforce.
    #[error("the policy is invalid: {0}")]
    Invalid(FieldError),
    /// The signed policy would not fit in one control frame.
    #[error("the signed policy is {0} bytes, more than a control frame carries")]
    TooLarge(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for PolicyError {
    fn from(e: sled::Error) -> Self {
        PolicyError::Store(StoreError::Db(e))
    }
}

/// The document to sign: `desired` with `tokens`, in name order.
pub fn signed_document(desired: &PolicyDocument, tokens: &[HubTokenRecord]) -> PolicyDocument {
    let mut document = desired.clone();
    document.tokens = tokens.iter().map(HubTokenRecord::policy_token).collect();
    document.tokens.sort_by(|a, b| a.name.cmp(&b.name));
    document
}

/// The next number after the newest policy (1 for the first).
pub fn next_number(newest: Option<&PolicyRecord>) -> u64 {
    newest.map_or(1, |p| p.number + 1)
}

/// `record` after the device's `report`, or `None` when the report changes nothing.
pub fn apply_report(record: &PolicyRecord, report: &PolicyReport, now: u64) -> Option<PolicyRecord> {
    if record.state == report.state && record.reason == report.reason {
        return None;
    }
    let mut next = record.clone();
    next.state = report.state;
    next.reason = report.reason.clone();
    // The time this number took effect; a refusal (say, after re-enrolling into local
    // management) means it no longer is.
    next.applied_at = match report.state {
        PolicyState::Applied => Some(now),
        PolicyState::Refused => None,
        PolicyState::Pending => record.applied_at,
    };
    Some(next)
}

/// Makes the policy `change` leads to from the newest one and the device's tokens: its number,
/// the signed document, the record to store. The caller holds the device's policy lock from
/// reading `newest` and `tokens` to storing the result (with `change`'s token change).
pub(super) fn prepare(
    device: &str,
    newest: Option<&PolicyRecord>,
    mut tokens: Vec<HubTokenRecord>,
    change: &PolicyChange,
    operator: &str,
    now: u64,
    sign: impl FnOnce(&Policy) -> String,
) -> Result<MadePolicy, PolicyError> {
    let previous = newest.map(|p| signed_document(&p.desired, &tokens));
    let (desired, group) = match change {
        PolicyChange::Document(document) => (PolicyDocument { tokens: Vec::new(), ..document.clone() }, None),
        PolicyChange::Group { group, document } => {
            (PolicyDocument { tokens: Vec::new(), ..document.clone() }, Some(group.clone()))
        }
        PolicyChange::TokenAdded(_) | PolicyChange::TokenRevoked(_) => {
            let newest = newest.ok_or(PolicyError::NoPolicy)?;
            (newest.desired.clone(), newest.group.clone())
        }
    };
    match change {
        PolicyChange::Document(_) | PolicyChange::Group { .. } => {}
        PolicyChange::TokenAdded(token) => {
            if tokens.iter().any(|t| t.name == token.name) {
                return Err(PolicyError::TokenExists(token.name.clone()));
            }
            tokens.push(token.clone());
        }
        PolicyChange::TokenRevoked(name) => {
            let before = tokens.len();
            tokens.retain(|t| &t.name != name);
            if tokens.len() == before {
                return Err(PolicyError::UnknownToken(name.clone()));
            }
        }
    }
    let document = signed_document(&desired, &tokens);
    document.check().map_err(PolicyError::Invalid)?;
    let number = next_number(newest);
    let policy = Policy { device: device.to_string(), number, issued_at: now, document: document.clone() };
    let envelope = sign(&policy);
    if envelope.len() > redtether_proto::policy::MAX_LEN {
        return Err(PolicyError::TooLarge(envelope.len()));
    }
    let record = PolicyRecord {
        device: device.to_string(),
        number,
        desired,
        hash: document.hash(),
        envelope,
        state: PolicyState::Pending,
        reason: None,
        applied_at: None,
        made_at: now,
        made_by: operator.to_string(),
        group,
    };
    Ok(MadePolicy { record, document, previous })
}

impl SledStore {
    fn policy_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.policy_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest policy made for `device`.
    pub fn policy(&self, device: &str) -> Result<Option<PolicyRecord>, StoreError> {
        self.policies.get(device.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    /// The tokens the hub made for `device`, by name.
    pub fn policy_tokens(&self, device: &str) -> Result<Vec<HubTokenRecord>, StoreError> {
        self.policy_tokens.scan_prefix(device_key(device, &[])).values().map(|v| decode(&v?)).collect()
    }

    /// Makes `device`'s next policy from `change`: the next number, the document signed with
    /// `sign`, stored durably as `pending`. Numbers are given under one lock, so concurrent
    /// changes get distinct, increasing numbers and the newest stored is the highest.
    pub fn make_policy(
        &self,
        device: &str,
        change: PolicyChange,
        operator: &str,
        now: u64,
        sign: impl FnOnce(&Policy) -> String,
    ) -> Result<MadePolicy, PolicyError> {
        let _guard = self.policy_lock();
        let newest = self.policy(device)?;
        let tokens = self.policy_tokens(device)?;
        let made = prepare(device, newest.as_ref(), tokens, &change, operator, now, sign)?;
        let encoded = encode(&made.record);
        (&self.policies, &self.policy_tokens)
            .transaction(|(policies, token_tree)| {
                policies.insert(device.as_bytes(), encoded.as_slice())?;
                match &change {
                    PolicyChange::Document(_) | PolicyChange::Group { .. } => {}
                    PolicyChange::TokenAdded(token) => {
                        token_tree.insert(device_key(device, token.name.as_bytes()), encode(token))?;
                    }
                    PolicyChange::TokenRevoked(name) => {
                        token_tree.remove(device_key(device, name.as_bytes()))?;
                    }
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => PolicyError::from(e),
                TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
            })?;
        self.flush()?;
        Ok(made)
    }

    /// Keeps what the device said about policy `report.number`, if that is the newest.
    pub fn update_policy(&self, device: &str, report: &PolicyReport, now: u64) -> Result<PolicyUpdate, StoreError> {
        let _guard = self.policy_lock();
        let Some(newest) = self.policy(device)? else { return Ok(PolicyUpdate::NotNewest(None)) };
        if newest.number != report.number {
            return Ok(PolicyUpdate::NotNewest(Some(newest.number)));
        }
        let Some(next) = apply_report(&newest, report, now) else { return Ok(PolicyUpdate::Unchanged) };
        self.policies.insert(device.as_bytes(), encode(&next))?;
        self.flush()?;
        Ok(PolicyUpdate::Changed(Box::new(next)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redtether_proto::policy::PolicyUser;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$KjR7n9y0DC0T8hK1IuvWz9P2qgT8Lw0nJa6W5mR1aF8";

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("hub")).unwrap();
        (dir, s)
    }

    fn token(name: &str) -> HubTokenRecord {
        HubTokenRecord {
            name: name.into(),
            sha256: "ab".repeat(32),
            created: 1,
            expires: 99,
            scope: Some("/api".into()),
            created_by: "ops".into(),
        }
    }

    fn document(protection: bool) -> PolicyDocument {
        PolicyDocument {
            protection,
            users: vec![PolicyUser { name: "ann".into(), password_hash: HASH.into(), role: "viewer".into() }],
            ..PolicyDocument::default()
        }
    }

    fn make(s: &SledStore, device: &str, change: PolicyChange) -> Result<MadePolicy, PolicyError> {
        s.make_policy(device, change, "ops", 10, |p| format!("signed {} {}", p.device, p.number))
    }

    #[test]
    fn numbers_grow_per_device_and_the_newest_is_kept() {
        let (_d, s) = store();
        assert_eq!(make(&s, "pump-1", PolicyChange::Document(document(false))).unwrap().record.number, 1);
        assert_eq!(make(&s, "pump-10", PolicyChange::Document(document(false))).unwrap().record.number, 1);
        let second = make(&s, "pump-1", PolicyChange::Document(document(true))).unwrap();
        assert_eq!(second.record.number, 2);
        assert_eq!(second.previous, Some(document(false)));
        let stored = s.policy("pump-1").unwrap().unwrap();
        assert_eq!(
            (stored.number, stored.state, stored.envelope.as_str()),
            (2, PolicyState::Pending, "signed pump-1 2")
        );
        assert_eq!(stored.desired, document(true));
    }

    #[test]
    fn concurrent_changes_get_distinct_numbers_and_the_highest_is_stored() {
        let (_d, s) = store();
        let s = std::sync::Arc::new(s);
        let numbers: Vec<u64> = (0..20)
            .map(|i| {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || {
                    make(&s, "pump-1", PolicyChange::Document(document(i % 2 == 0))).unwrap().record.number
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=20).collect::<Vec<_>>());
        assert_eq!(s.policy("pump-1").unwrap().unwrap().number, 20);
    }

    #[test]
    fn tokens_need_a_policy_and_each_change_makes_a_new_one() {
        let (_d, s) = store();
        assert!(matches!(make(&s, "pump-1", PolicyChange::TokenAdded(token("hmi"))), Err(PolicyError::NoPolicy)));
        make(&s, "pump-1", PolicyChange::Document(document(true))).unwrap();
        let added = make(&s, "pump-1", PolicyChange::TokenAdded(token("hmi"))).unwrap();
        assert_eq!(added.record.number, 2);
        assert_eq!(added.record.desired.tokens, vec![], "the desired document has no tokens");
        assert_eq!(added.document.tokens.len(), 1);
        assert_eq!(added.document.changes_from(added.previous.as_ref())["tokens"]["added"], serde_json::json!(["hmi"]));
        assert!(matches!(
            make(&s, "pump-1", PolicyChange::TokenAdded(token("hmi"))),
            Err(PolicyError::TokenExists(n)) if n == "hmi"
        ));
        // A new document keeps the tokens, and its changes do not mention them.
        let put = make(&s, "pump-1", PolicyChange::Document(document(false))).unwrap();
        assert_eq!(put.document.tokens.len(), 1);
        assert!(put.document.changes_from(put.previous.as_ref()).get("tokens").is_none());
        let revoked = make(&s, "pump-1", PolicyChange::TokenRevoked("hmi".into())).unwrap();
        assert_eq!((revoked.record.number, revoked.document.tokens.len()), (4, 0));
        assert!(s.policy_tokens("pump-1").unwrap().is_empty());
        assert!(matches!(
            make(&s, "pump-1", PolicyChange::TokenRevoked("hmi".into())),
            Err(PolicyError::UnknownToken(_))
        ));
        assert_eq!(s.policy("pump-1").unwrap().unwrap().number, 4, "a refused change makes no number");
    }

    #[test]
    fn a_token_the_device_would_refuse_is_not_stored() {
        let (_d, s) = store();
        make(&s, "pump-1", PolicyChange::Document(document(true))).unwrap();
        let mut bad = token("hmi");
        bad.scope = Some("/a/../b".into());
        assert!(matches!(
            make(&s, "pump-1", PolicyChange::TokenAdded(bad)),
            Err(PolicyError::Invalid(e)) if e.field == "tokens[0].scope"
        ));
        assert!(s.policy_tokens("pump-1").unwrap().is_empty());
    }

    #[test]
    fn only_the_newest_numbers_answer_is_kept_and_only_changes_count() {
        let (_d, s) = store();
        let report = |number, state, reason: Option<&str>| PolicyReport {
            number,
            state,
            reason: reason.map(str::to_string),
            hash: None,
        };
        assert_eq!(
            s.update_policy("pump-1", &report(1, PolicyState::Applied, None), 5).unwrap(),
            PolicyUpdate::NotNewest(None)
        );
        make(&s, "pump-1", PolicyChange::Document(document(true))).unwrap();
        make(&s, "pump-1", PolicyChange::Document(document(false))).unwrap();
        assert_eq!(
            s.update_policy("pump-1", &report(1, PolicyState::Applied, None), 5).unwrap(),
            PolicyUpdate::NotNewest(Some(2))
        );
        let PolicyUpdate::Changed(applied) =
            s.update_policy("pump-1", &report(2, PolicyState::Applied, None), 6).unwrap()
        else {
            panic!("not changed")
        };
        assert_eq!((applied.state, applied.applied_at), (PolicyState::Applied, Some(6)));
        assert_eq!(
            s.update_policy("pump-1", &report(2, PolicyState::Applied, None), 7).unwrap(),
            PolicyUpdate::Unchanged
        );
        assert_eq!(s.policy("pump-1").unwrap().unwrap().applied_at, Some(6), "a resend's answer keeps the time");
        let PolicyUpdate::Changed(refused) =
            s.update_policy("pump-1", &report(2, PolicyState::Refused, Some("locally_managed")), 8).unwrap()
        else {
            panic!("not changed")
        };
        assert_eq!((refused.reason.as_deref(), refused.applied_at), (Some("locally_managed"), None));
    }
}
