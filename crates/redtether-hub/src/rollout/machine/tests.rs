//! The machine against a model fleet on virtual time: devices that apply, fail, roll back or
//! go offline, and a model store of deployments the driver would have made.

use super::*;
use crate::rollout::plan::{Offline, RawPlan};
use std::collections::BTreeMap;

#[derive(Default)]
struct Fleet {
    offline: std::collections::BTreeSet<String>,
    unhealthy: std::collections::BTreeSet<String>,
    /// deployment id → (device, snapshot, state)
    deployments: BTreeMap<String, (String, String, DeployState)>,
    /// Every deployment made, in order: (device, snapshot).
    made: Vec<(String, String)>,
    events: Vec<(HubEventKind, serde_json::Value)>,
    next: u64,
}

impl Fleet {
    fn observe(&self, e: &Entry) -> Observed {
        let id = match &e.state {
            DeviceState::Deploying { deployment, .. }
            | DeviceState::Applied { deployment, .. }
            | DeviceState::Reverting { deployment, .. } => Some(deployment),
            _ => None,
        };
        Observed {
            online: !self.offline.contains(&e.device),
            healthy: !self.unhealthy.contains(&e.device),
            deployment: id.and_then(|id| self.deployments.get(id)).map(|(_, _, s)| (*s, "{}".to_string())),
        }
    }

    /// One driver turn: step, then carry out the actions (captures answer at once).
    fn turn(&mut self, r: &mut Rollout, now: u64) {
        let mut next = self.next;
        let mut ids = || {
            next += 1;
            format!("d{next}")
        };
        let this = &*self;
        let mut actions = r.step(now, &|e| this.observe(e), &mut ids);
        while let Some(action) = (!actions.is_empty()).then(|| actions.remove(0)) {
            match action {
                Action::Capture { device } => {
                    // An offline device does not answer.
                    let result = (!self.offline.contains(&device)).then(|| format!("before-{device}"));
                    actions.extend(r.on_captured(&device, result, now, &mut ids));
                }
                Action::Deploy { device, deployment, snapshot } => {
                    if !self.deployments.contains_key(&deployment) {
                        self.made.push((device.clone(), snapshot.clone()));
                        self.deployments.insert(deployment, (device, snapshot, DeployState::Pending));
                    }
                }
                Action::Record { kind, detail } => self.events.push((kind, detail)),
            }
        }
        self.next = next;
    }

    /// Every online device finishes its pending deployments: applied, or `outcome` for those
    /// listed.
    fn devices_act(&mut self, outcome: &BTreeMap<&str, DeployState>) {
        for (device, _, state) in self.deployments.values_mut() {
            if *state == DeployState::Pending && !self.offline.contains(device.as_str()) {
                *state = outcome.get(device.as_str()).copied().unwrap_or(DeployState::Applied);
            }
        }
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.events.iter().map(|(k, _)| k.as_str()).collect()
    }
}

fn plan(v: serde_json::Value) -> Plan {
    serde_json::from_value::<RawPlan>(v).unwrap().check().unwrap()
}

fn rollout(n: usize, p: Plan) -> Rollout {
    let devices = (0..n).map(|i| format!("dev{i:03}")).collect();
    Rollout::new("r1".into(), "prod".into(), "snap".into(), "hash".into(), p, devices, "ann".into(), None, 0)
}

/// Runs turns until the rollout is over or `turns` ran out.
fn run(fleet: &mut Fleet, r: &mut Rollout, outcome: &BTreeMap<&str, DeployState>, mut now: u64, turns: usize) -> u64 {
    for _ in 0..turns {
        fleet.turn(r, now);
        fleet.devices_act(outcome);
        if !r.is_active() {
            break;
        }
        now += 1000;
    }
    now
}

#[test]
fn a_rollout_moves_stage_by_stage_in_order_and_completes() {
    let mut fleet = Fleet::default();
    let mut r = rollout(21, plan(json!({"canary": 1, "waves": [10, 50, 100], "wait": 0})));
    assert_eq!(r.stages, 4);
    run(&mut fleet, &mut r, &BTreeMap::new(), 0, 50);
    assert_eq!(r.state, State::Completed);
    assert_eq!(fleet.made.len(), 21, "each device once");
    let stage_of = |d: &str| r.devices.iter().find(|e| e.device == d).unwrap().stage;
    let stages: Vec<usize> = fleet.made.iter().map(|(d, _)| stage_of(d)).collect();
    assert!(stages.windows(2).all(|w| w[0] <= w[1]), "deployed in stage order: {stages:?}");
    assert_eq!(stages.iter().filter(|s| **s == 0).count(), 1);
    assert_eq!(fleet.kinds(), ["rollout.wave", "rollout.wave", "rollout.wave", "rollout.completed"]);
    assert!(r.devices.iter().all(|e| e.previous.as_deref() == Some(&format!("before-{}", e.device))));
}

#[test]
fn the_next_stage_waits_until_the_last_stays_healthy_for_wait() {
    let mut fleet = Fleet::default();
    let mut r = rollout(3, plan(json!({"canary": 1, "waves": [100], "wait": 60})));
    fleet.turn(&mut r, 0);
    fleet.devices_act(&BTreeMap::new());
    fleet.turn(&mut r, 1_000); // applied at 1 s
    fleet.turn(&mut r, 60_999);
    assert_eq!(fleet.made.len(), 1, "still waiting on the canary");
    fleet.turn(&mut r, 61_000);
    assert_eq!(fleet.made.len(), 3);
    // A canary that turns unhealthy within its wait fails.
    let mut fleet = Fleet::default();
    let mut r = rollout(3, plan(json!({"canary": 1, "waves": [100], "wait": 60})));
    fleet.turn(&mut r, 0);
    fleet.devices_act(&BTreeMap::new());
    fleet.turn(&mut r, 1_000);
    fleet.unhealthy.insert("dev000".into());
    fleet.turn(&mut r, 30_000);
    assert_eq!(r.state, State::Halted);
    assert_eq!(fleet.made.len(), 2, "the canary's deployment and its revert");
    assert_eq!(fleet.made[1], ("dev000".to_string(), "before-dev000".to_string()));
}

#[test]
fn a_canary_the_device_rolled_back_halts_and_nothing_else_moves() {
    let mut fleet = Fleet::default();
    let mut r = rollout(10, plan(json!({"canary": 1, "waves": [50, 100], "wait": 0})));
    let outcome = BTreeMap::from([("dev000", DeployState::RolledBack)]);
    run(&mut fleet, &mut r, &outcome, 0, 20);
    assert_eq!(r.state, State::Halted);
    assert_eq!(fleet.made, [("dev000".to_string(), "snap".to_string())], "nothing beyond the canary");
    assert!(r.reasons[0].starts_with("dev000: rolled back by the device"), "{:?}", r.reasons);
    assert_eq!(fleet.kinds(), ["rollout.halted"]);
    assert!(r.devices[1..].iter().all(|e| e.state == DeviceState::Waiting));
}

#[test]
fn failures_in_wave_two_above_max_failed_roll_back_the_waves_before() {
    let mut fleet = Fleet::default();
    // 1 canary, wave 1 = 2 devices, wave 2 = 4 devices, wave 3 = the rest.
    let mut r = rollout(11, plan(json!({"canary": 1, "waves": [20, 60, 100], "wait": 0, "max_failed": 1})));
    assert_eq!(r.devices.iter().filter(|e| e.stage == 2).count(), 4);
    let wave2: Vec<String> = r.devices.iter().filter(|e| e.stage == 2).map(|e| e.device.clone()).collect();
    let outcome =
        BTreeMap::from([(wave2[0].as_str(), DeployState::Failed), (wave2[1].as_str(), DeployState::RolledBack)]);
    run(&mut fleet, &mut r, &outcome, 0, 30);
    assert_eq!(r.state, State::Halted);
    assert_eq!(r.reasons.len(), 2);
    // Canary, wave 1 and the two good devices of wave 2 are reverted to what they ran before.
    let reverted: Vec<&Entry> = r.devices.iter().filter(|e| matches!(e.state, DeviceState::Reverted { .. })).collect();
    assert_eq!(reverted.len(), 5);
    for e in &reverted {
        assert!(e.stage <= 2);
        assert!(fleet.made.contains(&(e.device.clone(), format!("before-{}", e.device))));
    }
    assert!(r.devices.iter().filter(|e| e.stage == 3).all(|e| e.state == DeviceState::Waiting), "wave 3 untouched");
    assert!(fleet.made.iter().all(|(d, _)| r.devices.iter().find(|e| &e.device == d).unwrap().stage <= 2));
    assert!(
        wave2.iter().take(2).all(|d| !fleet.made.contains(&(d.clone(), format!("before-{d}")))),
        "failed devices keep what they run"
    );
    assert!(!r.is_active());
}

#[test]
fn hold_on_halt_leaves_moved_devices_as_they_are() {
    let mut fleet = Fleet::default();
    let mut r = rollout(5, plan(json!({"canary": 2, "waves": [100], "wait": 0, "on_halt": "hold"})));
    let outcome = BTreeMap::from([("dev001", DeployState::Failed)]);
    run(&mut fleet, &mut r, &outcome, 0, 10);
    assert_eq!(r.state, State::Halted);
    assert_eq!(fleet.made.len(), 2);
    assert!(matches!(r.devices[0].state, DeviceState::Applied { .. }));
}

#[test]
fn offline_devices_wait_or_are_skipped_as_planned() {
    let mut fleet = Fleet::default();
    fleet.offline.insert("dev002".into());
    let mut r = rollout(4, plan(json!({"canary": 1, "waves": [100], "wait": 0, "offline": "skip"})));
    run(&mut fleet, &mut r, &BTreeMap::new(), 0, 10);
    assert_eq!(r.state, State::Completed);
    assert_eq!(r.devices[2].state, DeviceState::Skipped { reason: "offline".into() });
    assert_eq!(fleet.made.len(), 3);

    let mut fleet = Fleet::default();
    fleet.offline.insert("dev002".into());
    let mut r = rollout(4, plan(json!({"canary": 1, "waves": [100], "wait": 0, "offline": "wait"})));
    let now = run(&mut fleet, &mut r, &BTreeMap::new(), 0, 10);
    assert_eq!(r.state, State::Running, "waits for the offline device");
    assert_eq!(fleet.made.len(), 3);
    fleet.offline.clear();
    run(&mut fleet, &mut r, &BTreeMap::new(), now, 10);
    assert_eq!(r.state, State::Completed);
    assert_eq!(fleet.made.len(), 4);
    assert_eq!(Offline::default(), Offline::Wait);
}

#[test]
fn paused_rollouts_start_no_device_and_resume_where_they_were() {
    let mut fleet = Fleet::default();
    let mut r = rollout(6, plan(json!({"canary": 1, "waves": [100], "wait": 0})));
    fleet.turn(&mut r, 0);
    assert!(r.pause(1).is_some());
    assert!(r.pause(1).is_none(), "once");
    fleet.devices_act(&BTreeMap::new());
    run(&mut fleet, &mut r, &BTreeMap::new(), 1000, 10);
    assert_eq!(fleet.made.len(), 1, "the canary's deployment went on; no other started");
    assert!(matches!(r.devices[0].state, DeviceState::Applied { .. }));
    assert!(r.resume(20_000).is_some());
    run(&mut fleet, &mut r, &BTreeMap::new(), 20_000, 10);
    assert_eq!(r.state, State::Completed);
    assert_eq!(fleet.made.len(), 6);
    assert_eq!(fleet.kinds(), ["rollout.wave", "rollout.completed"]);
}

#[test]
fn an_aborted_rollout_moves_nothing_more() {
    let mut fleet = Fleet::default();
    let mut r = rollout(6, plan(json!({"canary": 1, "waves": [100], "wait": 0})));
    run(&mut fleet, &mut r, &BTreeMap::new(), 0, 1);
    assert!(r.abort(5000).is_some());
    assert!(r.resume(5000).is_none());
    run(&mut fleet, &mut r, &BTreeMap::new(), 6000, 10);
    assert_eq!(r.state, State::Aborted);
    assert_eq!(fleet.made.len(), 1, "only the canary's, made before the abort");
    assert!(
        r.devices.iter().all(|e| !matches!(e.state, DeviceState::Reverting { .. } | DeviceState::Capturing { .. }))
    );
}

#[test]
fn a_restart_makes_a_decided_deployment_once_and_never_twice() {
    let mut fleet = Fleet::default();
    let mut r = rollout(3, plan(json!({"canary": 1, "waves": [100], "wait": 0})));
    // The machine decided the canary's deployment and the record was stored, but the hub died
    // before making it.
    let mut ids = || "d-canary".to_string();
    let mut actions = r.step(0, &|_| Observed { online: true, healthy: true, deployment: None }, &mut ids);
    let Action::Capture { device } = actions.remove(0) else { panic!() };
    let deploy = r.on_captured(&device, Some("before".into()), 0, &mut ids);
    assert!(matches!(&deploy[..], [Action::Deploy { deployment, .. }] if deployment == "d-canary"));
    let stored = serde_json::to_vec(&r).unwrap();
    let mut restarted: Rollout = serde_json::from_slice(&stored).unwrap();
    restarted.on_restart();
    fleet.turn(&mut restarted, 1000);
    assert_eq!(fleet.made, [("dev000".to_string(), "snap".to_string())]);
    fleet.turn(&mut restarted, 2000);
    fleet.turn(&mut restarted, 3000);
    assert_eq!(fleet.made.len(), 1, "made once, then only watched");
    fleet.devices_act(&BTreeMap::new());
    run(&mut fleet, &mut restarted, &BTreeMap::new(), 4000, 10);
    assert_eq!(restarted.state, State::Completed);
    assert_eq!(fleet.made.len(), 3);
}

#[test]
fn a_device_that_never_applies_fails_at_the_timeout() {
    let mut fleet = Fleet::default();
    let mut r = rollout(2, plan(json!({"canary": 1, "waves": [100], "wait": 0, "timeout": "10m"})));
    fleet.turn(&mut r, 0);
    fleet.turn(&mut r, 599_000);
    assert_eq!(r.state, State::Running);
    fleet.turn(&mut r, 600_001);
    assert_eq!(r.state, State::Halted);
    assert!(r.reasons[0].contains("not applied within 600s"));
}

#[test]
fn every_change_bumps_the_revision_and_a_quiet_step_does_not() {
    let mut fleet = Fleet::default();
    let mut r = rollout(3, plan(json!({"canary": 1, "waves": [100], "wait": 60})));
    fleet.turn(&mut r, 0);
    let after_start = r.revision;
    assert!(after_start > 0, "the canary's capture and deployment changed it");
    fleet.turn(&mut r, 500);
    assert_eq!(r.revision, after_start, "nothing happened: nothing to store");
    fleet.devices_act(&BTreeMap::new());
    fleet.turn(&mut r, 1_000);
    assert!(r.revision > after_start, "the canary applied");
    let applied = r.revision;
    assert!(r.pause(2_000).is_some());
    assert_eq!(r.revision, applied + 1);
}

#[test]
fn the_record_round_trips() {
    let r = rollout(5, Plan::default());
    let back: Rollout = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}
