//! The conformance checks of the hub's own records (accounts, deployments, policies, groups,
//! the journal, the fleet audit, the figures), run by `store_conformance.rs` against each
//! backend with two handles `a` and `b` on one store.

use super::Handles;
use redtether_hub::identity::{OperatorRole, TokenScope};
use redtether_hub::rollout::{Plan, Rollout};
use redtether_hub::store::prelude::*;
use redtether_hub::store::{
    AccountSource, AuditFilter, DeploymentRecord, GroupRecord, HubTokenRecord, OperatorRecord, PipelineRecord,
    PipelineStage, PolicyChange, PolicyError, PolicyUpdate, PresenceSample, SnapshotRecord, Source, StoreError,
};
use redtether_proto::audit::{Actor, HubEventKind};
use redtether_proto::deployment::Snapshot;
use redtether_proto::policy::PolicyDocument;
use redtether_proto::wire::{DeployState, PolicyReport, PolicyState};
use serde_json::json;
use std::collections::BTreeSet;

fn account(name: &str, role: OperatorRole) -> OperatorRecord {
    OperatorRecord::new(name, role, Some(format!("{name}@example.test")), AccountSource::Local, 1000)
}

pub async fn accounts_tokens_and_sessions((a, b): Handles) {
    let code = a.add_operator(account("ann", OperatorRole::Owner), 600).unwrap();
    a.add_operator(account("bob", OperatorRole::Viewer), 600).unwrap();
    assert!(matches!(b.add_operator(account("ann", OperatorRole::Viewer), 600), Err(StoreError::Conflict(_))));
    assert_eq!(b.operator("ann").unwrap().unwrap().role, OperatorRole::Owner, "the first account stays");
    let names: Vec<String> = b.operators().unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(names, ["ann", "bob"]);

    assert_eq!(b.operator_by_setup_code(&code, 1000).unwrap().map(|o| o.name).as_deref(), Some("ann"));
    assert_eq!(b.operator_by_setup_code(&code, 1600).unwrap(), None, "expired");
    assert_eq!(b.operator_by_setup_code("rtsetup_nope", 1000).unwrap(), None);
    let old_role = b.update_operator("ann", |r| {
        r.setup = None;
        std::mem::replace(&mut r.role, OperatorRole::Member)
    });
    assert_eq!(old_role.unwrap(), Some(OperatorRole::Owner));
    assert_eq!(a.operator("ann").unwrap().unwrap().role, OperatorRole::Member, "changed through the other hub");
    assert_eq!(a.operator_by_setup_code(&code, 1000).unwrap(), None, "a used setup code is gone");
    assert_eq!(a.update_operator("nobody", |r| r.totp_last_step = 1).unwrap(), None);

    let token = a.add_api_token("ann", "ci", TokenScope::Read, 1000, 2000).unwrap();
    assert!(matches!(b.add_api_token("ann", "ci", TokenScope::Admin, 1000, 2000), Err(StoreError::Conflict(_))));
    b.add_api_token("ann", "deploy", TokenScope::Operate, 1000, 2000).unwrap();
    b.add_api_token("bob", "ci", TokenScope::Read, 1000, 2000).unwrap();
    let found = b.api_token(&token).unwrap().unwrap();
    assert_eq!((found.operator.as_str(), found.name.as_str(), found.scope), ("ann", "ci", TokenScope::Read));
    assert_eq!(b.api_token("rto_nope").unwrap(), None);
    let names: Vec<String> = a.api_tokens("ann").unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["ci", "deploy"]);
    assert!(a.revoke_api_token("ann", "deploy").unwrap());
    assert!(!a.revoke_api_token("ann", "deploy").unwrap(), "revoked once");

    let (id, session) = a.create_session("ann", "password", 1000).unwrap();
    assert_eq!(b.session(&id).unwrap(), Some(session.clone()));
    b.touch_session(&id, 1500).unwrap();
    assert_eq!(a.session(&id).unwrap().unwrap().last_used, 1500);
    a.end_session(&id).unwrap();
    assert_eq!(b.session(&id).unwrap(), None);
    a.create_session("ann", "password", 1000).unwrap();
    a.create_session("ann", "oidc", 1000).unwrap();
    let (bobs, _) = a.create_session("bob", "password", 1000).unwrap();
    assert_eq!(b.end_sessions("ann").unwrap(), 2);

    // Removing an account takes its tokens and sessions with it.
    let (anns, _) = a.create_session("ann", "password", 1000).unwrap();
    assert_eq!(b.remove_operator("ann").unwrap().name, "ann");
    assert_eq!(a.api_token(&token).unwrap(), None);
    assert_eq!(a.session(&anns).unwrap(), None);
    assert!(a.session(&bobs).unwrap().is_some(), "another's session stays");
    assert!(matches!(a.remove_operator("ann"), Err(StoreError::Conflict(_))));
}

pub async fn an_account_changed_through_two_hubs_at_once_keeps_every_change((a, b): Handles) {
    a.add_operator(account("ann", OperatorRole::Owner), 600).unwrap();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move { store.update_operator("ann", |r| r.totp_last_step += 1).unwrap() }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(a.operator("ann").unwrap().unwrap().totp_last_step, 30);
}

fn deployment(device: &str, id: &str, number: u64) -> DeploymentRecord {
    DeploymentRecord {
        id: id.into(),
        device: device.into(),
        number,
        state: DeployState::Pending,
        detail: json!({}),
        flows_hash: "abc".into(),
        operator: "ann".into(),
        created: 10,
        updated: 10,
        expires: 99,
        snapshot: None,
        envelope: format!("envelope of {id}"),
    }
}

pub async fn deployments_are_numbered_superseded_and_end_once((a, b): Handles) {
    let made = a.create_deployment("pump-1", Box::new(|n| deployment("pump-1", "d-a", n))).unwrap();
    assert_eq!(made.number, 1);
    assert_eq!(b.create_deployment("pump-10", Box::new(|n| deployment("pump-10", "d-x", n))).unwrap().number, 1);
    assert_eq!(b.create_deployment("pump-1", Box::new(|n| deployment("pump-1", "d-b", n))).unwrap().number, 2);
    let first = a.deployment("pump-1", "d-a").unwrap().unwrap();
    assert_eq!((first.state, first.detail["reason"].as_str()), (DeployState::Failed, Some("superseded")));
    assert_eq!(first.detail["by"], "d-b");
    let ids: Vec<String> = a.deployments("pump-1").unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["d-a", "d-b"], "oldest first");
    assert_eq!(a.deployment_to_send("pump-1").unwrap().unwrap().id, "d-b");
    assert!(b.update_deployment("pump-1", "d-b", DeployState::Sent, json!({}), 11).unwrap());
    assert!(!b.update_deployment("pump-1", "d-b", DeployState::Sent, json!({}), 12).unwrap(), "no change");
    assert!(a.update_deployment("pump-1", "d-b", DeployState::Applied, json!({"ms": 5}), 13).unwrap());
    assert_eq!(b.deployment_to_send("pump-1").unwrap(), None, "nothing left to send");
    let applied = b.deployment("pump-1", "d-b").unwrap().unwrap();
    assert_eq!((applied.state, applied.updated, applied.detail["ms"].as_u64()), (DeployState::Applied, 13, Some(5)));
    assert!(!a.update_deployment("pump-1", "d-b", DeployState::RolledBack, json!({}), 14).unwrap(), "ended");
    assert!(!a.update_deployment("pump-1", "nope", DeployState::Applied, json!({}), 14).unwrap());
    assert!(!a.update_deployment("pump-10", "d-b", DeployState::Applied, json!({}), 14).unwrap(), "another's");
    assert_eq!(a.deployment("pump-10", "d-a").unwrap(), None);
}

pub async fn deployments_made_at_once_through_two_hubs_get_distinct_numbers((a, b): Handles) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let id = format!("d-{i}");
            store.create_deployment("pump-1", Box::new(move |n| deployment("pump-1", &id, n))).unwrap().number
        }));
    }
    let mut numbers = BTreeSet::new();
    for task in tasks {
        numbers.insert(task.await.unwrap());
    }
    assert_eq!(numbers, (1..=20).collect::<BTreeSet<u64>>());
    let all = a.deployments("pump-1").unwrap();
    let pending: Vec<u64> = all.iter().filter(|d| d.state == DeployState::Pending).map(|d| d.number).collect();
    assert_eq!(pending, [20], "only the newest is still pending");
}

fn snapshot(device: &str, id: &str, created: u64) -> SnapshotRecord {
    SnapshotRecord {
        id: id.into(),
        device: device.into(),
        created,
        operator: "ann".into(),
        snapshot: Snapshot {
            flows: vec![json!({"id": "f1", "type": "tab"})],
            credentials: None,
            modules: Default::default(),
            env: Default::default(),
            settings: Default::default(),
        },
    }
}

pub async fn snapshots_and_sboms((a, b): Handles) {
    a.enroll_device("pump-1", "aa", 99, "k", 1).unwrap();
    a.add_snapshot(&snapshot("pump-1", "s-2", 20)).unwrap();
    a.add_snapshot(&snapshot("pump-1", "s-1", 10)).unwrap();
    b.add_snapshot(&snapshot("pump-10", "s-3", 5)).unwrap();
    assert_eq!(b.snapshot_by_id("s-1").unwrap(), Some(snapshot("pump-1", "s-1", 10)));
    assert_eq!(b.snapshot_by_id("s-").unwrap(), None);
    assert_eq!(b.snapshot("pump-10", "s-3").unwrap().unwrap().device, "pump-10");
    assert_eq!(b.snapshot("pump-1", "s-3").unwrap(), None, "another device's snapshot");
    let ids: Vec<String> = b.snapshots("pump-1").unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["s-1", "s-2"], "oldest first");

    let sbom = json!({"components": [
        {"name": "node-red", "version": "4.0.9", "properties": [{"name": "redtether:npm:latest", "value": "4.1.0"}]},
        {"name": "express", "version": "4.21.2", "properties": [{"name": "redtether:npm:latest", "value": "4.21.2"}]}
    ]});
    b.put_sbom("pump-1", &sbom).unwrap();
    assert_eq!(a.sbom("pump-1").unwrap(), Some(sbom));
    assert_eq!(a.device("pump-1").unwrap().unwrap().sbom_outdated, Some(1), "kept with the device");
    assert_eq!(a.sbom("pump-10").unwrap(), None);
}

fn document(protection: bool) -> PolicyDocument {
    PolicyDocument { protection, ..PolicyDocument::default() }
}

fn hub_token(name: &str) -> HubTokenRecord {
    HubTokenRecord {
        name: name.into(),
        sha256: "ab".repeat(32),
        created: 1,
        expires: 99,
        scope: None,
        created_by: "ann".into(),
    }
}

fn sign(p: &redtether_proto::policy::Policy) -> String {
    format!("signed {} #{} ({} tokens)", p.device, p.number, p.document.tokens.len())
}

pub async fn policies_are_numbered_and_carry_their_tokens((a, b): Handles) {
    assert!(matches!(
        a.make_policy("pump-1", PolicyChange::TokenAdded(hub_token("t")), "ann", 10, Box::new(sign)),
        Err(PolicyError::NoPolicy)
    ));
    let first = a.make_policy("pump-1", PolicyChange::Document(document(false)), "ann", 10, Box::new(sign)).unwrap();
    assert_eq!((first.record.number, first.previous.as_ref()), (1, None));
    let second = b.make_policy("pump-1", PolicyChange::TokenAdded(hub_token("t1")), "ann", 11, Box::new(sign)).unwrap();
    assert_eq!((second.record.number, second.record.envelope.as_str()), (2, "signed pump-1 #2 (1 tokens)"));
    assert!(matches!(
        a.make_policy("pump-1", PolicyChange::TokenAdded(hub_token("t1")), "ann", 12, Box::new(sign)),
        Err(PolicyError::TokenExists(_))
    ));
    assert!(matches!(
        a.make_policy("pump-1", PolicyChange::TokenRevoked("nope".into()), "ann", 12, Box::new(sign)),
        Err(PolicyError::UnknownToken(_))
    ));
    assert_eq!(a.policy_tokens("pump-1").unwrap(), [hub_token("t1")]);
    let third = a.make_policy("pump-1", PolicyChange::Document(document(true)), "ann", 13, Box::new(sign)).unwrap();
    assert_eq!(third.document.tokens.len(), 1, "a new document keeps the device's tokens");
    assert_eq!(b.policy("pump-1").unwrap().unwrap(), third.record);
    b.make_policy("pump-1", PolicyChange::TokenRevoked("t1".into()), "ann", 14, Box::new(sign)).unwrap();
    assert!(a.policy_tokens("pump-1").unwrap().is_empty());

    let report = |number, state| PolicyReport { number, state, reason: None, hash: None };
    assert_eq!(
        b.update_policy("pump-1", &report(3, PolicyState::Applied), 20).unwrap(),
        PolicyUpdate::NotNewest(Some(4))
    );
    let PolicyUpdate::Changed(applied) = b.update_policy("pump-1", &report(4, PolicyState::Applied), 20).unwrap()
    else {
        panic!("the newest policy's report is kept")
    };
    assert_eq!((applied.state, applied.applied_at), (PolicyState::Applied, Some(20)));
    assert_eq!(a.policy("pump-1").unwrap().unwrap().state, PolicyState::Applied);
    assert_eq!(a.update_policy("pump-2", &report(1, PolicyState::Applied), 20).unwrap(), PolicyUpdate::NotNewest(None));
}

pub async fn policies_made_at_once_through_two_hubs_get_distinct_numbers((a, b): Handles) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let change = PolicyChange::Document(document(i % 3 == 0));
            store.make_policy("pump-1", change, "ann", 10, Box::new(sign)).unwrap().record.number
        }));
    }
    let mut numbers = BTreeSet::new();
    for task in tasks {
        numbers.insert(task.await.unwrap());
    }
    assert_eq!(numbers, (1..=16).collect::<BTreeSet<u64>>());
    assert_eq!(b.policy("pump-1").unwrap().unwrap().number, 16, "the newest stored is the highest");
}

fn group(name: &str) -> GroupRecord {
    GroupRecord {
        name: name.into(),
        description: format!("{name} devices"),
        created: 1,
        created_by: "ann".into(),
        policy: None,
    }
}

pub async fn groups_rollouts_and_pipelines((a, b): Handles) {
    for id in ["pump-1", "pump-2", "pump-3"] {
        a.enroll_device(id, &format!("{id}-cert"), 99, "k", 1).unwrap();
    }
    a.create_group(&group("line-1")).unwrap();
    b.create_group(&group("line-2")).unwrap();
    assert!(matches!(b.create_group(&group("line-1")), Err(StoreError::Conflict(_))));
    let names: Vec<String> = a.groups().unwrap().into_iter().map(|g| g.name).collect();
    assert_eq!(names, ["line-1", "line-2"]);

    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let change = a.change_group_devices("line-1", &ids(&["pump-1", "pump-2"]), &[]).unwrap();
    assert_eq!(change.added, ["pump-1", "pump-2"]);
    let change = b.change_group_devices("line-2", &ids(&["pump-2"]), &[]).unwrap();
    assert_eq!(change.moved_from.get("pump-2").map(String::as_str), Some("line-1"), "moved, not copied");
    let change = b.change_group_devices("line-1", &ids(&["pump-1"]), &ids(&["pump-3"])).unwrap();
    assert!(change.added.is_empty() && change.removed.is_empty(), "already where asked: {change:?}");
    assert!(matches!(a.change_group_devices("line-1", &ids(&["nope"]), &[]), Err(StoreError::Conflict(_))));
    assert!(matches!(a.change_group_devices("line-9", &ids(&["pump-3"]), &[]), Err(StoreError::Conflict(_))));
    assert_eq!(a.group_members("line-1").unwrap(), ["pump-1"]);
    assert_eq!(b.group_members("line-2").unwrap(), ["pump-2"]);
    assert_eq!(a.device("pump-2").unwrap().unwrap().group.as_deref(), Some("line-2"));

    let changed = b.update_group("line-1", |g| g.policy = Some(document(true))).unwrap().unwrap();
    assert_eq!(a.group("line-1").unwrap(), Some(changed));
    assert_eq!(a.update_group("line-9", |g| g.description.clear()).unwrap(), None);
    assert!(matches!(a.delete_group("line-1"), Err(StoreError::Conflict(_))), "a group with devices stays");
    b.change_group_devices("line-1", &[], &ids(&["pump-1"])).unwrap();
    assert!(a.delete_group("line-1").unwrap());
    assert!(!b.delete_group("line-1").unwrap());
    assert_eq!(b.group("line-1").unwrap(), None);

    let rollout = Rollout::new(
        "r-1".into(),
        "line-2".into(),
        "s-1".into(),
        "abc".into(),
        Plan::default(),
        ids(&["pump-2"]),
        "ann".into(),
        None,
        1000,
    );
    a.put_rollout(&rollout).unwrap();
    assert_eq!(b.rollout("r-1").unwrap(), Some(rollout.clone()));
    assert_eq!(b.rollouts().unwrap(), [rollout]);
    assert_eq!(b.rollout("r-2").unwrap(), None);

    let pipeline = PipelineRecord {
        name: "release".into(),
        stages: vec![PipelineStage { group: "line-2".into(), plan: Plan::default() }],
        created: 1,
        created_by: "ann".into(),
    };
    b.create_pipeline(&pipeline).unwrap();
    assert!(matches!(a.create_pipeline(&pipeline), Err(StoreError::Conflict(_))));
    assert_eq!(a.pipeline("release").unwrap(), Some(pipeline.clone()));
    assert_eq!(a.pipelines().unwrap(), [pipeline]);
    assert!(a.delete_pipeline("release").unwrap());
    assert!(!b.delete_pipeline("release").unwrap());
}

pub async fn what_a_hub_records_every_hub_reads((a, b): Handles) {
    let mut watching = b.subscribe_recorded();
    a.record_event("pump-1", HubEventKind::DeviceConnected, json!({"addr": "192.0.2.1"})).unwrap();
    b.record_event("pump-1", HubEventKind::DeviceDisconnected, json!({})).unwrap();
    b.record_event("pump-10", HubEventKind::DeviceConnected, json!({})).unwrap();
    let stored = b.record(HubEventKind::OperatorAdded, Actor::user("ann"), "bob", json!({"role": "viewer"})).unwrap();
    a.flush().unwrap();
    b.flush().unwrap();
    let kinds: Vec<String> = a.events("pump-1").unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["device.connected", "device.disconnected"], "both hubs' events about the device, in order");
    assert_eq!(a.events("pump-1").unwrap()[0].detail["addr"], "192.0.2.1");
    assert!(a.events("bob").unwrap().is_empty(), "an operator's account is not a device");
    // The watcher hears what its hub records.
    let mut heard = Vec::new();
    while let Ok(e) = watching.try_recv() {
        heard.push(e.kind);
    }
    assert!(heard.contains(&"operator.added".to_string()) && heard.contains(&"device.disconnected".to_string()));
    assert_eq!(stored.kind, "operator.added");
    assert_eq!(a.journal_failures() + b.journal_failures(), 0);
}

pub async fn the_fleet_audit_pages_through_every_event_once((a, b): Handles) {
    for id in ["pump-1", "pump-2"] {
        a.enroll_device(id, &format!("{id}-cert"), 99, "k", 1).unwrap();
    }
    let mut ts = 0;
    let mut at = |seq: u64, id: &str| {
        ts += 1;
        let mut e = super::event(seq, id);
        e.ts = format!("2026-12-06T00:00:{ts:02}.000Z");
        e
    };
    let one: Vec<_> = (1..=12).map(|s| at(s, &format!("p1-{s}"))).collect();
    let two: Vec<_> = (1..=8).map(|s| at(s, &format!("p2-{s}"))).collect();
    a.ingest_audit("pump-1", &one).unwrap();
    b.ingest_audit("pump-2", &two).unwrap();
    a.record_event("pump-1", HubEventKind::DeviceConnected, json!({})).unwrap();
    b.record(HubEventKind::OperatorAdded, Actor::user("ann"), "bob", json!({})).unwrap();

    // Every row, newest first, page by page through both hubs: each exactly once.
    let everything = AuditFilter::default();
    let (mut seen, mut before, mut pages) = (Vec::new(), None, 0);
    loop {
        let store = if pages % 2 == 0 { &a } else { &b };
        let page = store.audit_page(&everything, before.as_ref(), 7).unwrap();
        assert!(!page.partial);
        seen.extend(page.rows.iter().map(|r| (r.source, r.device.clone(), r.seq, r.kind.clone())));
        pages += 1;
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 12 + 8 + 2, "{seen:?}");
    assert_eq!(seen.iter().collect::<std::collections::HashSet<_>>().len(), seen.len(), "no row twice");
    assert_eq!(pages, 4);
    // The device events were placed at their own (2026) time, the hub's now: the hub's first.
    assert!(seen[..2].iter().all(|r| r.0 == Source::Hub), "{seen:?}");
    let device_rows: Vec<(Option<String>, u64)> =
        seen.iter().filter(|r| r.0 == Source::Device).map(|r| (r.1.clone(), r.2)).collect();
    assert_eq!(device_rows.first(), Some(&(Some("pump-2".to_string()), 8)), "newest first");
    assert_eq!(device_rows.last(), Some(&(Some("pump-1".to_string()), 1)));

    let of = |filter: AuditFilter| a.audit_page(&filter, None, 500).unwrap().rows;
    assert_eq!(of(AuditFilter { device: Some("pump-2".into()), ..Default::default() }).len(), 8);
    assert_eq!(of(AuditFilter { source: Some(Source::Hub), ..Default::default() }).len(), 2);
    assert_eq!(of(AuditFilter { kind: Some("operator".into()), ..Default::default() }).len(), 1, "a kind's prefix");
    assert_eq!(
        of(AuditFilter { kind: Some("operator.add".into()), ..Default::default() }).len(),
        0,
        "not a part of a word"
    );
    assert_eq!(of(AuditFilter { actor: Some("user:ann".into()), ..Default::default() }).len(), 1);
    let since = redtether_proto::time::unix_of(humantime::parse_rfc3339("2026-12-06T00:00:10Z").unwrap());
    let until = redtether_proto::time::unix_of(humantime::parse_rfc3339("2026-12-06T00:00:15Z").unwrap());
    let window = of(AuditFilter { since: Some(since), until: Some(until), ..Default::default() });
    assert_eq!(window.len(), 5, "seconds 10 to 14");

    let mut exported = Vec::new();
    let count = b
        .audit_export_to(&AuditFilter { device: Some("pump-1".into()), ..Default::default() }, |row| {
            exported.push(row.seq);
            Ok(())
        })
        .unwrap();
    assert_eq!(count, 13, "the device's 12 events and the hub's one about it");
    assert_eq!(exported.len(), 13);
}

pub async fn census_and_presence_samples((a, b): Handles) {
    for id in ["pump-1", "pump-2", "pump-3"] {
        a.enroll_device(id, &format!("{id}-cert"), 99, "k", 1).unwrap();
    }
    b.revoke_device("pump-3").unwrap();
    a.create_deployment("pump-1", Box::new(|n| deployment("pump-1", "d-1", n))).unwrap();
    b.create_deployment("pump-1", Box::new(|n| deployment("pump-1", "d-2", n))).unwrap();
    a.update_deployment("pump-1", "d-2", DeployState::Applied, json!({}), 20).unwrap();
    a.create_deployment("pump-2", Box::new(|n| deployment("pump-2", "d-3", n))).unwrap();
    a.make_policy("pump-2", PolicyChange::Document(document(true)), "ann", 10, Box::new(sign)).unwrap();
    let census = b.census().unwrap();
    assert_eq!((census.devices, census.revoked), (3, 1));
    assert_eq!(census.deployments.into_iter().collect::<Vec<_>>(), [("applied", 1), ("pending", 1)], "newest only");
    assert_eq!(census.policies.into_iter().collect::<Vec<_>>(), [("pending", 1)]);

    let day = 86400;
    for (i, at) in [day, 2 * day, 9 * day, 9 * day + 300].into_iter().enumerate() {
        let store = if i % 2 == 0 { &a } else { &b };
        store.record_presence(PresenceSample { at, online: i as u32, total: 3 }).unwrap();
    }
    let kept: Vec<u64> = a.presence_since(0).unwrap().into_iter().map(|s| s.at).collect();
    assert_eq!(kept, [9 * day, 9 * day + 300], "a week is kept");
    assert_eq!(b.presence_since(9 * day + 1).unwrap(), [PresenceSample { at: 9 * day + 300, online: 3, total: 3 }]);
}
