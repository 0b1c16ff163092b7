//! Model-based test of the audit journal (proptest state machine over a reference model):
//! append / ack / reopen / crash-reopen (power cut: only what was synced survives) /
//! fill-to-capacity, with the journal's invariants checked after every step.

use proptest::prelude::*;
use redtether::audit::store::{MemStore, Store};
use redtether::audit::{Actor, AuditEvent, AuditKind, Journal, StoredEvent};
use std::collections::BTreeMap;
use std::time::SystemTime;

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Ack(u8),
    Reopen,
    CrashReopen,
    /// The power fails while an append is being written: it is committed, never synced.
    CrashMidAppend(usize),
    Fill,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..6).prop_map(Op::Append),
        3 => any::<u8>().prop_map(Op::Ack),
        1 => Just(Op::Reopen),
        2 => Just(Op::CrashReopen),
        2 => (1usize..6).prop_map(Op::CrashMidAppend),
        1 => Just(Op::Fill),
    ]
}

/// What the test knows independently of the journal.
#[derive(Default)]
struct Model {
    /// Every event ever stored, by sequence number.
    stored: BTreeMap<u64, StoredEvent>,
    last_seq: u64,
    cursor: u64,
    /// Sequence ranges the journal said it dropped before forwarding.
    dropped: Vec<(u64, u64)>,
}

const MAX_BYTES: u64 = 24 * 1024;

fn event(n: u64) -> AuditEvent {
    AuditEvent::new(AuditKind::AdminWrite, Actor::System, format!("e{n}"))
        .with("n", n)
        .with("pad", "x".repeat((n % 7 * 40) as usize))
}

fn check(journal: &mut Journal<MemStore>, model: &Model, store: &MemStore) -> Result<(), TestCaseError> {
    let meta = journal.meta().clone();
    prop_assert_eq!(meta.last_seq, model.last_seq, "sequence numbers never go back or skip");
    prop_assert_eq!(meta.cursor, model.cursor, "the cursor is what was acknowledged");
    let verification = journal.verify().unwrap();
    prop_assert_eq!(verification.first_bad.clone(), None, "the chain verifies: {:?}", verification);
    let present = journal.read(0, usize::MAX).unwrap();
    // Present records are a contiguous run ending at the head, identical to what was stored.
    for (i, e) in present.iter().enumerate() {
        prop_assert_eq!(e.seq, meta.checkpoint_seq + 1 + i as u64);
        prop_assert_eq!(Some(e), model.stored.get(&e.seq));
    }
    if let Some(last) = present.last() {
        prop_assert_eq!(last.seq, model.last_seq);
    }
    // Whatever is gone was either acknowledged or is covered by an audit.dropped marker.
    for seq in 1..=meta.checkpoint_seq {
        let forwarded = seq <= model.cursor;
        let reported = model.dropped.iter().any(|(a, b)| (*a..=*b).contains(&seq));
        prop_assert!(forwarded || reported, "seq {} vanished silently", seq);
    }
    prop_assert!(meta.bytes <= MAX_BYTES + 8 * 1024, "bounded: {} bytes", meta.bytes);
    prop_assert_eq!(store.events.len() as u64, meta.last_seq - meta.checkpoint_seq);
    Ok(())
}

fn append(journal: &mut Journal<MemStore>, model: &mut Model, n: usize) {
    let events = (0..n).map(|i| event(model.last_seq + i as u64 + 1)).collect();
    let stored = journal.append(events, SystemTime::now()).unwrap();
    assert!(stored.len() == n || stored.len() == n + 1);
    for e in stored {
        if e.kind == "audit.dropped" {
            model.dropped.push((e.detail["first_seq"].as_u64().unwrap(), e.detail["last_seq"].as_u64().unwrap()));
        }
        model.last_seq = e.seq;
        model.stored.insert(e.seq, e);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_journal_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let mut journal = Journal::open(MemStore::default(), MAX_BYTES).unwrap();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Append(n) => append(&mut journal, &mut model, n),
                Op::Fill => {
                    while journal.meta().bytes < MAX_BYTES * 9 / 10 {
                        append(&mut journal, &mut model, 5);
                    }
                    append(&mut journal, &mut model, 5);
                }
                Op::Ack(fraction) => {
                    let target = model.last_seq * u64::from(fraction) / 255;
                    let acked = journal.ack(target).unwrap();
                    model.cursor = model.cursor.max(target.min(model.last_seq));
                    prop_assert_eq!(acked, model.cursor);
                }
                Op::Reopen => {
                    let store = take_store(journal);
                    journal = Journal::open(store, MAX_BYTES).unwrap();
                }
                Op::CrashReopen => {
                    // Every append and ack synced before returning: a power cut loses nothing.
                    let store = take_store(journal).after_power_cut();
                    journal = Journal::open(store, MAX_BYTES).unwrap();
                }
                Op::CrashMidAppend(n) => {
                    let mut flaky = Journal::open(Flaky(take_store(journal)), MAX_BYTES).unwrap();
                    let events = (0..n).map(|i| event(model.last_seq + i as u64 + 1)).collect();
                    let head = flaky.meta().clone();
                    prop_assert!(flaky.append(events, SystemTime::now()).is_err());
                    prop_assert_eq!(flaky.meta(), &head, "a failed append advances nothing in memory");
                    // Nothing of it was answered as durable, and nothing of it survives.
                    let store = flaky.into_store().0.after_power_cut();
                    journal = Journal::open(store, MAX_BYTES).unwrap();
                }

            }
            let store = peek_store(&journal);
            check(&mut journal, &model, &store)?;
        }
    }
}

// The journal owns its store; these reach it through a reopen of a clone of its state.
fn take_store(journal: Journal<MemStore>) -> MemStore {
    journal.into_store()
}

fn peek_store(journal: &Journal<MemStore>) -> MemStore {
    journal.store().clone()
}

#[test]
fn a_power_cut_before_sync_loses_only_unsynced_writes() {
    // The store double itself: what the model relies on.
    let mut store = MemStore::default();
    let mut j = Journal::open(store.clone(), MAX_BYTES).unwrap();
    j.append(vec![event(1)], SystemTime::now()).unwrap();
    store = j.into_store();
    store
        .commit(redtether::audit::store::Batch { put: vec![(99, vec![1])], remove: vec![], meta: Default::default() })
        .unwrap();
    let cut = store.after_power_cut();
    assert!(cut.events.contains_key(&1) && !cut.events.contains_key(&99));
}

/// A store whose sync always fails: the power goes before the data is on disk.
struct Flaky(MemStore);

impl Store for Flaky {
    fn load_meta(&self) -> Result<Option<redtether::audit::store::Meta>, redtether::audit::store::StoreError> {
        self.0.load_meta()
    }
    fn commit(&mut self, batch: redtether::audit::store::Batch) -> Result<(), redtether::audit::store::StoreError> {
        self.0.commit(batch)
    }
    fn sync(&mut self) -> Result<(), redtether::audit::store::StoreError> {
        Err(redtether::audit::store::StoreError::Sync(redtether_host::sled_open::SyncError::Sync {
            path: "db".into(),
            source: std::io::Error::other("power cut"),
        }))
    }
    fn range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, redtether::audit::store::StoreError> {
        self.0.range(from, limit)
    }
    /// Opening it again shows what reached the disk: what was last synced.
    fn reopen(&mut self) -> Result<(), redtether::audit::store::StoreError> {
        self.0 = self.0.after_power_cut();
        Ok(())
    }
}
