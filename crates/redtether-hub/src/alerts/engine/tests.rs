//! The engine on virtual time: each test steps a clock of Unix seconds by hand.

use super::*;
use std::time::Duration;

const START: u64 = 1_800_000_000;
const YEAR: u64 = 365 * 86_400;

fn engine(offline_after: u64) -> Engine {
    let thresholds = Thresholds {
        offline_after: Duration::from_secs(offline_after),
        audit_backlog_above: 100,
        certificate_expiring_within: Duration::from_secs(14 * 86_400),
    };
    Engine::new(thresholds, START)
}

fn device(online: bool, last_seen: u64) -> DeviceView {
    DeviceView {
        id: "pump-1".into(),
        group: Some("prod".into()),
        online,
        last_seen: Some(last_seen),
        enrolled: START - YEAR,
        cert_not_after: START + YEAR,
        node_red: Some(NodeRedState::Running),
        node_red_detail: None,
        audit_backlog: Some(0),
    }
}

fn names(alerts: &[Alert]) -> Vec<(String, bool)> {
    alerts.iter().map(|a| (a.name.to_string(), a.resolved)).collect()
}

#[test]
fn offline_fires_once_after_offline_after_and_resolves_once() {
    let mut e = engine(120);
    assert!(e.scan(START + 100, &[device(true, START)]).is_empty());
    // Gone at 101 (last_seen written then); offline from 101 on.
    for t in (START + 101..START + 221).step_by(5) {
        assert!(e.scan(t, &[device(false, START + 101)]).is_empty(), "at {t}");
    }
    let fired = e.scan(START + 221, &[device(false, START + 101)]);
    assert_eq!(names(&fired), [("device.offline".into(), false)]);
    assert_eq!(
        (fired[0].key.as_str(), fired[0].device.as_deref(), fired[0].group.as_deref()),
        ("device.offline:pump-1", Some("pump-1"), Some("prod"))
    );
    for t in START + 222..START + 1000 {
        assert!(e.scan(t, &[device(false, START + 101)]).is_empty(), "once only, at {t}");
    }
    let back = e.scan(START + 1000, &[device(true, START + 1000)]);
    assert_eq!(names(&back), [("device.offline".into(), true)]);
    assert_eq!(back[0].key, fired[0].key, "a receiver pairs them by key");
    assert!(e.scan(START + 1001, &[device(true, START + 1000)]).is_empty());
}

#[test]
fn a_device_just_let_go_by_the_registry_is_not_offline_since_its_connection_began() {
    let mut e = engine(120);
    // Connected since a day ago: the stored last_seen is the connection's start.
    assert!(e.scan(START + 500, &[device(true, START - 86_400)]).is_empty());
    // The registry let it go; last_seen not written yet.
    assert!(e.scan(START + 501, &[device(false, START - 86_400)]).is_empty());
    assert_eq!(names(&e.scan(START + 620, &[device(false, START - 86_400)])), [("device.offline".into(), false)]);
}

#[test]
fn devices_offline_at_start_count_from_last_seen_after_a_grace_for_reconnecting() {
    // Offline for an hour when the hub starts: reported once the grace is over, not before.
    let mut e = engine(300);
    let gone = device(false, START - 3600);
    assert!(e.scan(START, std::slice::from_ref(&gone)).is_empty());
    assert!(e.scan(START + START_GRACE - 1, std::slice::from_ref(&gone)).is_empty());
    let fired = e.scan(START + START_GRACE, std::slice::from_ref(&gone));
    assert_eq!(names(&fired), [("device.offline".into(), false)]);
    assert_eq!(fired[0].detail["last_seen"], format_unix(START - 3600), "since when, from last_seen");
    // One that comes back within the grace never alerts.
    let mut e = engine(300);
    assert!(e.scan(START + 1, std::slice::from_ref(&gone)).is_empty());
    assert!(e.scan(START + 20, &[device(true, START + 20)]).is_empty());
    assert!(e.scan(START + 400, &[device(true, START + 20)]).is_empty());
    // With a short offline_after the grace is that short too.
    let mut e = engine(2);
    assert_eq!(names(&e.scan(START + 2, &[gone])), [("device.offline".into(), false)]);
}

#[test]
fn a_flapping_device_does_not_page_again_before_refire_after() {
    let mut e = engine(10);
    let mut t = START + 100;
    assert_eq!(e.scan(t, &[device(false, START)]).len(), 1);
    t += 1;
    assert_eq!(names(&e.scan(t, &[device(true, t)])), [("device.offline".into(), true)]);
    // Drops and comes back every 30 s for a while: offline long enough each time, but held off.
    let mut sent = 0;
    while t < START + 101 + REFIRE_AFTER - 30 {
        t += 15;
        sent += e.scan(t, &[device(true, t)]).len();
        t += 15;
        sent += e.scan(t, &[device(false, t - 15)]).len();
    }
    assert_eq!(sent, 0);
    // Still offline once the hold-off is over: it fires again.
    let last = t - 15;
    t = START + 101 + REFIRE_AFTER;
    assert_eq!(names(&e.scan(t, &[device(false, last)])), [("device.offline".into(), false)]);
}

#[test]
fn a_crash_loop_fires_once_through_its_retries_and_resolves_when_node_red_runs() {
    let mut e = engine(300);
    let with = |state, t: u64| DeviceView {
        node_red: Some(state),
        node_red_detail: Some("exited with code 3".into()),
        ..device(true, t)
    };
    assert!(e.scan(START, &[with(NodeRedState::Starting, START)]).is_empty());
    assert!(e.scan(START + 1, &[with(NodeRedState::Backoff, START)]).is_empty());
    let fired = e.scan(START + 2, &[with(NodeRedState::CrashLoop, START)]);
    assert_eq!(names(&fired), [("node_red.crash_loop".into(), false)]);
    assert_eq!(fired[0].detail["last_exit"], "exited with code 3");
    // Retried at the cap: starting, crash loop again ... the agent restarted: backoff ...
    for (i, state) in [NodeRedState::Starting, NodeRedState::CrashLoop, NodeRedState::Backoff, NodeRedState::CrashLoop]
        .into_iter()
        .cycle()
        .take(40)
        .enumerate()
    {
        assert!(e.scan(START + 3 + i as u64, &[with(state, START)]).is_empty());
    }
    assert_eq!(
        names(&e.scan(START + 50, &[with(NodeRedState::Running, START)])),
        [("node_red.crash_loop".into(), true)]
    );
    // Again at once: held off; still so after REFIRE_AFTER: fires.
    assert!(e.scan(START + 60, &[with(NodeRedState::CrashLoop, START)]).is_empty());
    assert_eq!(e.scan(START + 50 + REFIRE_AFTER, &[with(NodeRedState::CrashLoop, START)]).len(), 1);
}

#[test]
fn an_audit_backlog_clears_at_half_the_threshold() {
    let mut e = engine(300);
    let with = |n| DeviceView { audit_backlog: Some(n), ..device(true, START) };
    assert!(e.scan(START, &[with(100)]).is_empty(), "at the threshold is not above it");
    assert_eq!(names(&e.scan(START + 1, &[with(101)])), [("audit.backlog".into(), false)]);
    assert!(e.scan(START + 2, &[with(99)]).is_empty());
    assert!(e.scan(START + 3, &[with(120)]).is_empty());
    let resolved = e.scan(START + 4, &[with(50)]);
    assert_eq!(names(&resolved), [("audit.backlog".into(), true)]);
    assert_eq!(resolved[0].detail["backlog"], 50);
}

#[test]
fn an_expiring_certificate_fires_once_and_a_renewal_resolves_it() {
    let mut e = engine(300);
    let with = |not_after| DeviceView { cert_not_after: not_after, ..device(true, START) };
    assert!(e.scan(START, &[with(START + 15 * 86_400)]).is_empty());
    let fired = e.scan(START + 86_400, &[with(START + 15 * 86_400)]);
    assert_eq!(names(&fired), [("certificate.expiring".into(), false)]);
    assert_eq!(fired[0].detail["expired"], false);
    assert!(e.scan(START + 20 * 86_400, &[with(START + 15 * 86_400)]).is_empty(), "expired: still the same alert");
    assert_eq!(
        names(&e.scan(START + 21 * 86_400, &[with(START + 111 * 86_400)])),
        [("certificate.expiring".into(), true)]
    );
}

#[test]
fn a_revoked_device_has_its_firing_alerts_resolved_and_is_forgotten() {
    let mut e = engine(10);
    assert_eq!(e.scan(START + 100, &[device(false, START)]).len(), 1);
    let resolved = e.scan(START + 101, &[]);
    assert_eq!(names(&resolved), [("device.offline".into(), true)]);
    assert!(e.scan(START + 102, &[]).is_empty());
}

#[test]
fn one_shot_events_fire_once_each() {
    let mut e = engine(300);
    assert!(e.scan(START, &[device(true, START)]).is_empty());
    let map = |v: Value| v.as_object().unwrap().clone();
    let rolled = map(json!({"deployment": "d-1", "state": "rolled_back", "detail": {"reason": "health check failed"}}));
    let alert = e.recorded(START, "deployment.status", "pump-1", &rolled, Some("prod".into())).unwrap();
    assert_eq!(
        (alert.name, alert.resolved, alert.group.as_deref()),
        (AlertName::DeploymentRolledBack, false, Some("prod"))
    );
    assert!(alert.summary.contains("health check failed"), "{}", alert.summary);
    assert_eq!(
        e.recorded(START + 1, "deployment.status", "pump-1", &rolled, Some("prod".into())),
        None,
        "the same event again"
    );
    let applied = map(json!({"deployment": "d-2", "state": "applied", "detail": {}}));
    assert_eq!(e.recorded(START, "deployment.status", "pump-1", &applied, None), None);

    let refused = map(json!({"number": 4, "state": "refused", "reason": "locally_managed"}));
    let alert = e.recorded(START, "policy.status", "pump-1", &refused, None).unwrap();
    assert_eq!((alert.name, alert.detail["reason"].as_str()), (AlertName::PolicyRefused, Some("locally_managed")));
    let applied = map(json!({"number": 5, "state": "applied", "reason": null}));
    assert_eq!(e.recorded(START, "policy.status", "pump-1", &applied, None), None);

    let halted =
        map(json!({"rollout": "r-1", "reasons": ["pump-1: rolled back"], "reverting": [], "on_halt": "pause"}));
    let alert = e.recorded(START, "rollout.halted", "group:prod", &halted, None).unwrap();
    assert_eq!(
        (alert.name, alert.device.as_deref(), alert.group.as_deref()),
        (AlertName::RolloutHalted, None, Some("prod"))
    );
    assert_eq!(e.recorded(START, "rollout.halted", "group:prod", &halted, None), None);

    assert_eq!(e.recorded(START, "device.connected", "pump-1", &map(json!({"addr": "x"})), None), None);
    assert_eq!(e.recorded(START, "alert.sent", "pump-1", &rolled, None), None, "its own records never alert");

    let gap = e.audit_gap(START, "chain:7", "broken".into(), json!({"seq": 7})).unwrap();
    assert_eq!((gap.name, gap.key.as_str()), (AlertName::HubAuditGap, "hub.audit_gap:chain:7"));
    assert_eq!(e.audit_gap(START, "chain:7", "broken".into(), json!({})), None);
}
