//! The hub on PostgreSQL (`[store] url`): a real hub process on a real PostgreSQL server with a
//! real agent running Node-RED and simulated devices. Enrollment, the tunnels, the remote
//! editor, audit delivery and the operator API work as on the embedded store, the records
//! live in the database (the state directory has no embedded store), and everything is there
//! again after the hub is killed and started anew. An unreachable database is a clear error at
//! start, not a hang.

use redtether_testkit as common;

use common::hub::{Hub, api, delivered, online_agent, simulated_fleet, wait_online};
use common::postgres::Postgres;
use common::wait_for_async;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn database(url: &str) -> String {
    url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_on_postgres_serves_its_fleet_and_keeps_everything_across_a_kill() {
    let pg = Postgres::start();
    let url = pg.create_database();
    let db = database(&url);
    let mut hub = Hub::start_with("info", &format!("[store]\nurl = {url:?}\nhub_id = \"hub-a\"\n"));
    let owner = hub.operator("ops", "owner");
    let agent = online_agent(&hub, "pump-pg", "");
    let (_sim, devices) = simulated_fleet(&hub, "sim", 20).await;
    assert!(!hub.state_dir().join("db").exists(), "no embedded store beside PostgreSQL");

    // The fleet as the API shows it, read from the database.
    let (code, listed) = api(&hub, reqwest::Method::GET, "/api/devices", Some(&owner)).await;
    assert_eq!(code, 200);
    let online = listed.as_array().unwrap().iter().filter(|d| d["online"] == true).count();
    assert_eq!(online, 21, "{listed}");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM devices"), "21");

    // The remote editor through the hub.
    let client = common::http::client();
    let editor = format!("{}/devices/pump-pg/editor/", hub.api());
    let page = client.get(&editor).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Node-RED"));

    // The device's journal lands in the database, event for event.
    let (at_hub, local) = delivered(&hub, &agent, "pump-pg", &owner).await;
    let ids = |events: &[Value]| events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&at_hub), ids(&local));
    let rows = pg.psql(&db, "SELECT count(*) FROM device_audit WHERE device = 'pump-pg'");
    assert_eq!(rows, local.len().to_string());
    // What the hub recorded (the connections, the operator) is shared there too.
    let recorded = pg.psql(&db, "SELECT count(*) FROM hub_events WHERE hub = 'hub-a' AND kind = 'device.connected'");
    assert!(recorded.parse::<u32>().unwrap() >= 21, "{recorded}");

    // Killed and started again: the devices come back, the accounts and history are there.
    hub.kill9();
    hub.spawn();
    wait_online(&agent, 2);
    let (code, device) = api(&hub, reqwest::Method::GET, "/api/devices/pump-pg", Some(&owner)).await;
    assert_eq!(code, 200, "the operator's token is in the database");
    assert_eq!(device["online"], true);
    let (again, _) = delivered(&hub, &agent, "pump-pg", &owner).await;
    assert!(again.len() >= at_hub.len(), "nothing lost");
    assert_eq!(ids(&again[..at_hub.len()]), ids(&at_hub), "nothing changed");
    wait_for_async(Duration::from_secs(60), "the simulated devices to reconnect", || async {
        devices.iter().all(|d| d.is_connected()).then_some(())
    })
    .await;
}

#[test]
fn an_unreachable_database_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n\
             [store]\nurl = \"postgres://hub:hunter2@127.0.0.1:{port}/rt?sslmode=disable\"\n",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(common::fresh_hub_bin()).args(["run", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot connect to the store"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password is not shown: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "an error, not a hang");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_store_moves_a_populated_hub_and_its_devices_come_back_intact() {
    let mut hub = Hub::start();
    let owner = hub.operator("ops", "owner");
    let agent = online_agent(&hub, "pump-mig", "");
    let (_sim, devices) = simulated_fleet(&hub, "mig", 10).await;
    let (before, _) = delivered(&hub, &agent, "pump-mig", &owner).await;
    let (_, listed_before) = api(&hub, reqwest::Method::GET, "/api/devices", Some(&owner)).await;
    let hub_trail_before = hub.audit().len();

    let pg = Postgres::start();
    let url = pg.create_database();
    let db = database(&url);
    let state = hub.state_dir().display().to_string();
    let migrate = |hub: &Hub| hub.cli(&["migrate-store", "--from", &state, "--to", &url, "--hub-id", "hub-a"]);
    // Not while the hub runs: it would change the records under the copy.
    assert_eq!(migrate(&hub).0, 75, "the state directory is the running hub's");
    hub.stop();
    let (code, out, err) = migrate(&hub);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("11 devices") && out.contains("1 operators"), "{out}");
    let (again, _, err) = migrate(&hub);
    assert_ne!(again, 0, "a second copy into the same database is refused");
    assert!(err.contains("already holds hub records"), "{err}");

    hub.append_config(&format!("[store]\nurl = {url:?}\nhub_id = \"hub-a\""));
    hub.spawn();
    wait_online(&agent, 2);
    wait_for_async(Duration::from_secs(60), "the simulated devices to reconnect", || async {
        devices.iter().all(|d| d.is_connected()).then_some(())
    })
    .await;
    // The operator's token, the devices and their history came along.
    let (code, listed) = api(&hub, reqwest::Method::GET, "/api/devices", Some(&owner)).await;
    assert_eq!(code, 200, "the operator's token works on the migrated hub");
    let ids = |list: &Value| {
        let mut ids: Vec<String> = list.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().into()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&listed), ids(&listed_before));
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM devices"), "11");
    let (after, local) = delivered(&hub, &agent, "pump-mig", &owner).await;
    let seqs = |events: &[Value]| events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(seqs(&after[..before.len()]), seqs(&before), "the audit history is intact");
    assert_eq!(seqs(&after), seqs(&local), "and goes on: the hub's copy is the journal");
    // The hub's own trail goes on from where it was, in the same file, shared with the database.
    assert!(hub.audit().len() > hub_trail_before);
    let shared = pg.psql(&db, "SELECT count(*) FROM hub_events WHERE hub = 'hub-a'");
    assert!(shared.parse::<usize>().unwrap() >= hub_trail_before, "{shared}");
}
