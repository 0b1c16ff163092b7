//! One conformance suite for the hub's store backends: the embedded sled store and PostgreSQL
//! (a real server, started for the test). Each check gets a fresh store and two handles on it,
//! `a` and `b`: for PostgreSQL two separate stores (two hubs, each with its own pool and state
//! directory) on one database; for sled the one store twice (one process holds it). Races are
//! run with many tasks on a multi-threaded runtime.

#[path = "store_conformance/records.rs"]
mod store_conformance_records;

use redtether_hub::store::domain::HubEntry;
use redtether_hub::store::postgres::{PgOptions, PgSetupError, PgStore};
use redtether_hub::store::prelude::*;
use redtether_hub::store::{DeviceRecord, HubStore, SledStore, StoreError};
use redtether_proto::audit::{Actor, AuditEvent, AuditKind, GENESIS, Ingested, StoredEvent};
use redtether_proto::wire::{DeviceStatus, EnrollRefusal};
use redtether_testkit::postgres::Postgres;
use std::sync::Arc;
use std::time::Duration;

pub type Handles = (Arc<HubStore>, Arc<HubStore>);

pub fn event(seq: u64, id: &str) -> StoredEvent {
    let e = AuditEvent::new(AuditKind::AgentStarted, Actor::System, "conformance");
    StoredEvent::seal(e, seq, id.into(), "2026-12-06T00:00:00.000Z".into(), &GENESIS).0
}

async fn tokens_are_one_time_expire_and_can_be_given_back((a, b): Handles) {
    let t = a.create_enroll_token("pump-1", 3600, Some("line-1"), 1000).unwrap();
    assert_eq!(b.check_enroll_token(&t, 1000).unwrap(), Ok("pump-1".into()), "seen by the other hub");
    assert_eq!(b.check_enroll_token(&t, 4600).unwrap(), Err(EnrollRefusal::ExpiredToken));
    assert_eq!(b.check_enroll_token("rte_nope", 1000).unwrap(), Err(EnrollRefusal::UnknownToken));
    assert_eq!(b.enroll_token_group(&t).unwrap().as_deref(), Some("line-1"));
    assert_eq!(b.enroll_token_group("rte_nope").unwrap(), None);
    assert!(a.consume_enroll_token(&t).unwrap());
    assert!(!b.consume_enroll_token(&t).unwrap(), "only once, on any hub");
    assert_eq!(b.check_enroll_token(&t, 1000).unwrap(), Err(EnrollRefusal::UsedToken));
    b.release_enroll_token(&t).unwrap();
    assert_eq!(a.check_enroll_token(&t, 1000).unwrap(), Ok("pump-1".into()), "given back");
    assert!(!a.consume_enroll_token("rte_nope").unwrap(), "an unknown token is not consumed");
}

async fn one_token_raced_through_two_hubs_is_accepted_once((a, b): Handles) {
    for round in 0..5 {
        let token = a.create_enroll_token(&format!("race-{round}"), 3600, None, 1000).unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (store, token) = (if i % 2 == 0 { a.clone() } else { b.clone() }, token.clone());
            tasks.push(tokio::spawn(async move { store.consume_enroll_token(&token).unwrap() }));
        }
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.unwrap());
        }
        assert_eq!(winners, 1, "round {round}: exactly one of 16 racing enrollments wins");
    }
}

async fn devices_keep_their_certificates_and_revocations((a, b): Handles) {
    a.enroll_device("pump-2", "aa", 99, "key-1", 10).unwrap();
    a.enroll_device("pump-1", "bb", 99, "key-1", 11).unwrap();
    let d = b.device("pump-1").unwrap().unwrap();
    assert_eq!(
        (d.id.as_str(), d.enrolled, d.cert_serial.as_str(), d.cert_not_after, d.revoked),
        ("pump-1", 11, "bb", 99, false)
    );
    assert_eq!((d.device_key.as_deref(), d.audit_acked, d.group.as_deref()), (Some("key-1"), 0, None));
    let ids: Vec<String> = b.devices().unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["pump-1", "pump-2"], "in id order");
    assert_eq!(b.device("pump-3").unwrap(), None);

    // Enrolling again revokes the previous certificate.
    b.enroll_device("pump-1", "cc", 199, "key-2", 12).unwrap();
    assert_eq!(a.revoked_serials().unwrap(), ["bb"]);
    // Renewal keeps the old certificate accepted until the new one is used.
    a.renew_device("pump-1", "dd", 299, "key-3").unwrap();
    let d = b.device("pump-1").unwrap().unwrap();
    assert_eq!(
        (d.cert_serial.as_str(), d.previous_serial.as_deref(), d.cert_not_after, d.device_key.as_deref()),
        ("dd", Some("cc"), 299, Some("key-3"))
    );
    assert_eq!(b.revoke_device("pump-1").unwrap(), "dd");
    assert!(a.device("pump-1").unwrap().unwrap().revoked);
    assert_eq!(a.revoked_serials().unwrap(), ["bb", "dd"]);
    assert!(matches!(a.revoke_device("nope"), Err(StoreError::Conflict(_))));
}

async fn every_field_of_a_device_record_survives((a, b): Handles) {
    a.enroll_device("pump-1", "aa", 99, "k", 1).unwrap();
    let status = DeviceStatus { agent_version: "9.9.9".into(), ..DeviceStatus::example() };
    let changed = a
        .modify_device("pump-1", &|d: &mut DeviceRecord| {
            d.last_seen = Some(1_800_000_000);
            d.agent_version = Some("9.9.9".into());
            d.status = Some(status.clone());
            d.sbom_outdated = Some(3);
            d.group = Some("line-1".into());
            d.audit_duplicates = 7;
        })
        .unwrap()
        .unwrap();
    assert_eq!(b.device("pump-1").unwrap().unwrap(), changed, "read back as written");
    assert_eq!(changed.status.as_ref().unwrap(), &status);
    assert_eq!(a.modify_device("nope", &|d: &mut DeviceRecord| d.revoked = true).unwrap(), None);
    assert_eq!(a.device("nope").unwrap(), None, "a change does not make a device");
}

async fn changes_made_at_once_through_two_hubs_all_stay((a, b): Handles) {
    a.enroll_device("pump-1", "aa", 99, "k", 1).unwrap();
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .modify_device("pump-1", &move |d: &mut DeviceRecord| {
                    d.audit_duplicates += 1;
                    d.last_seen = Some(d.last_seen.unwrap_or(0).max(i));
                })
                .unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let d = a.device("pump-1").unwrap().unwrap();
    assert_eq!((d.audit_duplicates, d.last_seen), (40, Some(39)), "no change lost");
}

async fn delivered_audit_is_kept_once_in_order((a, b): Handles) {
    a.enroll_device("pump-1", "aa", 99, "k", 1).unwrap();
    a.enroll_device("pump-10", "bb", 99, "k", 1).unwrap();
    let first = [event(1, "e1"), event(2, "e2")];
    assert_eq!(a.ingest_audit("pump-1", &first).unwrap(), Ingested { stored: 2, duplicates: 0, ack: 2 });
    // The acknowledgement was lost; the device sends again from its cursor, through the other hub.
    let again = [first[1].clone(), event(3, "e3")];
    assert_eq!(b.ingest_audit("pump-1", &again).unwrap(), Ingested { stored: 1, duplicates: 1, ack: 3 });
    let backwards = [event(5, "x"), event(4, "y")];
    assert!(matches!(a.ingest_audit("pump-1", &backwards), Err(StoreError::InvalidBatch(_))));
    assert_eq!(a.ingest_audit("pump-1", &[]).unwrap(), Ingested { stored: 0, duplicates: 0, ack: 0 });
    // A journal that started again: new events under old seqs are new.
    assert_eq!(a.ingest_audit("pump-1", &[event(1, "f1")]).unwrap().stored, 1);
    a.ingest_audit("pump-10", &[event(1, "g1")]).unwrap();

    let held = b.device_audit("pump-1", 0).unwrap();
    let ids: Vec<&str> = held.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e1", "f1", "e2", "e3"], "in seq order");
    assert_eq!(held[0], first[0], "kept exactly as sealed");
    assert_eq!(b.device_audit("pump-1", 2).unwrap().len(), 1, "after a seq");
    assert_eq!(b.device_audit("pump-10", 0).unwrap().len(), 1, "a device's events are not another's");
    let d = a.device("pump-1").unwrap().unwrap();
    assert_eq!((d.audit_acked, d.audit_duplicates), (3, 1));
}

async fn one_batch_delivered_through_two_hubs_at_once_lands_once((a, b): Handles) {
    a.enroll_device("pump-1", "aa", 99, "k", 1).unwrap();
    let batch: Vec<StoredEvent> = (1..=200).map(|seq| event(seq, &format!("e{seq}"))).collect();
    let batch = Arc::new(batch);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (store, batch) = (if i % 2 == 0 { a.clone() } else { b.clone() }, batch.clone());
        tasks.push(tokio::spawn(async move { store.ingest_audit("pump-1", &batch).unwrap() }));
    }
    let mut stored = 0;
    for task in tasks {
        let done = task.await.unwrap();
        assert_eq!((done.stored + done.duplicates, done.ack), (200, 200));
        stored += done.stored;
    }
    assert_eq!(stored, 200, "every event stored by exactly one delivery");
    assert_eq!(b.device_audit("pump-1", 0).unwrap(), *batch);
    assert_eq!(a.device("pump-1").unwrap().unwrap().audit_duplicates, 1000);
}

async fn presence_follows_holdings_and_dead_hubs_are_reaped((a, b): Handles) {
    let hub = |id: &str| HubEntry { id: id.into(), address: format!("{id}.internal:7443") };
    a.join(&hub("hub-a")).unwrap();
    b.join(&hub("hub-b")).unwrap();
    assert_eq!(a.hubs().unwrap(), [hub("hub-a"), hub("hub-b")]);

    let first = a.hold("pump-1", "hub-a").unwrap();
    assert_eq!(b.holder("pump-1").unwrap(), Some(hub("hub-a")));
    assert_eq!(b.holder("pump-2").unwrap(), None);
    // The device reconnects through hub-b before hub-a noticed it gone: hub-a's late
    // disconnect must not remove hub-b's holding.
    let second = b.hold("pump-1", "hub-b").unwrap();
    assert_ne!(first, second);
    assert!(!a.let_go("pump-1", first).unwrap(), "a stale holding removes nothing");
    assert_eq!(a.holder("pump-1").unwrap(), Some(hub("hub-b")));
    assert!(b.let_go("pump-1", second).unwrap());
    assert_eq!(a.holder("pump-1").unwrap(), None);

    // hub-a stops heart-beating; hub-b goes on.
    a.hold("pump-1", "hub-a").unwrap();
    a.hold("pump-2", "hub-a").unwrap();
    b.hold("pump-3", "hub-b").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(b.heartbeat("hub-b").unwrap());
    assert_eq!(b.reap(Duration::from_millis(300)).unwrap(), ["hub-a"]);
    assert_eq!(b.reap(Duration::from_millis(300)).unwrap(), Vec::<String>::new(), "reaped once");
    assert_eq!(b.holder("pump-1").unwrap(), None, "a dead hub's devices are held by no one");
    assert_eq!(b.holder("pump-2").unwrap(), None);
    assert_eq!(b.holder("pump-3").unwrap(), Some(hub("hub-b")));
    assert!(!a.heartbeat("hub-a").unwrap(), "a reaped hub learns it must join again");
    assert_eq!(a.hubs().unwrap(), [hub("hub-b")]);

    // Joining again (a restart) starts with no holdings of its own.
    a.join(&hub("hub-a")).unwrap();
    a.hold("pump-1", "hub-a").unwrap();
    a.join(&hub("hub-a")).unwrap();
    assert_eq!(b.holder("pump-1").unwrap(), None, "a restarted hub holds nothing yet");
    assert_eq!(b.holder("pump-3").unwrap(), Some(hub("hub-b")), "nor drops another's");

    // Every holding of a live hub, at once; a hub that leaves takes its holdings along.
    b.hold("pump-4", "hub-b").unwrap();
    a.hold("pump-5", "hub-a").unwrap();
    let held = |store: &Arc<HubStore>| -> Vec<(String, String)> {
        store.holdings().unwrap().into_iter().map(|(d, h)| (d, h.id)).collect()
    };
    let pair = |d: &str, h: &str| (d.to_string(), h.to_string());
    assert_eq!(held(&a), [pair("pump-3", "hub-b"), pair("pump-4", "hub-b"), pair("pump-5", "hub-a")]);
    assert!(!a.drop_holding("pump-4", "hub-a").unwrap(), "another hub's holding stays");
    assert!(b.drop_holding("pump-4", "hub-b").unwrap());
    b.hold("pump-4", "hub-b").unwrap();
    b.leave("hub-b").unwrap();
    assert_eq!(held(&a), [pair("pump-5", "hub-a")]);
    assert_eq!(a.hubs().unwrap(), [hub("hub-a")]);
    assert_eq!(a.holder("pump-4").unwrap(), None);
}

async fn hubs_racing_to_store_a_secret_all_get_one((a, b): Handles) {
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move { store.shared_secret("reset-key", &[i; 32]).unwrap() }));
    }
    let mut got = Vec::new();
    for task in tasks {
        got.push(task.await.unwrap());
    }
    assert!(got.iter().all(|s| s == &got[0] && s.len() == 32), "{got:?}");
    assert_eq!(b.shared_secret("reset-key", &[9; 32]).unwrap(), got[0], "kept");
    assert_eq!(b.shared_secret("other", b"x").unwrap(), b"x", "per name");
}

macro_rules! suite {
    ($run:ident) => {
        $run!(store_conformance_records::accounts_tokens_and_sessions);
        $run!(store_conformance_records::an_account_changed_through_two_hubs_at_once_keeps_every_change);
        $run!(store_conformance_records::deployments_are_numbered_superseded_and_end_once);
        $run!(store_conformance_records::deployments_made_at_once_through_two_hubs_get_distinct_numbers);
        $run!(store_conformance_records::snapshots_and_sboms);
        $run!(store_conformance_records::policies_are_numbered_and_carry_their_tokens);
        $run!(store_conformance_records::policies_made_at_once_through_two_hubs_get_distinct_numbers);
        $run!(store_conformance_records::groups_rollouts_and_pipelines);
        $run!(store_conformance_records::what_a_hub_records_every_hub_reads);
        $run!(store_conformance_records::the_fleet_audit_pages_through_every_event_once);
        $run!(store_conformance_records::census_and_presence_samples);
        $run!(tokens_are_one_time_expire_and_can_be_given_back);
        $run!(one_token_raced_through_two_hubs_is_accepted_once);
        $run!(devices_keep_their_certificates_and_revocations);
        $run!(every_field_of_a_device_record_survives);
        $run!(changes_made_at_once_through_two_hubs_all_stay);
        $run!(delivered_audit_is_kept_once_in_order);
        $run!(one_batch_delivered_through_two_hubs_at_once_lands_once);
        $run!(presence_follows_holdings_and_dead_hubs_are_reaped);
        $run!(hubs_racing_to_store_a_secret_all_get_one);
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sled_store_conforms() {
    macro_rules! run {
        ($check:path) => {{
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<HubStore> = Arc::new(SledStore::open(dir.path()).unwrap());
            $check((store.clone(), store)).await;
        }};
    }
    suite!(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_postgres_store_conforms() {
    let pg = Postgres::start();
    macro_rules! run {
        ($check:path) => {{
            let url = pg.create_database();
            let dir = tempfile::tempdir().unwrap();
            let hub = |id: &str| -> Arc<HubStore> {
                Arc::new(PgStore::open(&PgOptions::new(&url), &dir.path().join(id), id).unwrap())
            };
            $check((hub("hub-a"), hub("hub-b"))).await;
        }};
    }
    suite!(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_schema_is_migrated_once_and_a_newer_one_is_refused() {
    let pg = Postgres::start();
    let url = pg.create_database();
    // Two hubs starting together: one migrates, the other finds it done.
    let options = PgOptions::new(&url);
    let dir = tempfile::tempdir().unwrap();
    let open = |id: &str| PgStore::open(&options, &dir.path().join(id), id);
    let (first, second) = std::thread::scope(|s| {
        let other = s.spawn(|| open("hub-b"));
        (open("hub-a"), other.join().unwrap())
    });
    let (first, second) = (first.unwrap(), second.unwrap());
    let versions =
        pg.psql(&url_database(&url), "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations");
    let every: Vec<String> = (1..=redtether_hub::store::postgres::migrate::latest()).map(|v| v.to_string()).collect();
    assert_eq!(versions, every.join(","), "each version applied once");
    drop((first, second));

    pg.psql(&url_database(&url), "INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')");
    match open("hub-c") {
        Err(PgSetupError::SchemaTooNew { found: 999, .. }) => {}
        other => panic!("a newer schema must be refused, got {:?}", other.err()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_speaks_tls_and_checks_the_server() {
    let pg = Postgres::start();
    let url = pg.create_database().replace("sslmode=disable", "sslmode=require");
    let trusted = PgOptions { ca_file: Some(pg.ca_file()), ..PgOptions::new(&url) };
    let dir = tempfile::tempdir().unwrap();
    let store = PgStore::open(&trusted, dir.path(), "hub-a").unwrap();
    store.create_enroll_token("pump-1", 60, None, 1).unwrap();
    let tls_sessions = pg.psql("postgres", "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.application_name = 'redtether-hub'");
    assert_ne!(tls_sessions, "0", "the hub's connection is encrypted");

    // A server whose certificate no trusted CA issued is refused.
    let other = Postgres::start();
    let untrusted = PgOptions { ca_file: Some(other.ca_file()), ..PgOptions::new(&url) };
    let refused =
        PgStore::open(&untrusted, dir.path(), "hub-a").err().expect("an unknown server certificate is refused");
    assert!(matches!(refused, PgSetupError::Connect(_)), "{refused}");
}

fn url_database(url: &str) -> String {
    url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string()
}
