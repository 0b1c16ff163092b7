//! The operator API's defence against token guessing: failed token checks are limited per
//! source address (429 with Retry-After), before a presented token is even looked up.

use redtether_testkit::hub::Hub;
use std::time::Duration;

async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"].to_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_token_checks_are_rate_limited_per_address_before_any_lookup() {
    let hub = Hub::start();
    let good = hub.operator("ops", "owner");
    let client = redtether_testkit::http::client();
    let devices = format!("{}/api/devices", hub.api());
    for i in 0..10 {
        assert_eq!(get(&client, &devices, Some(&format!("rto_guess{i}"))).await.status(), 401, "guess {i}");
    }
    let limited = get(&client, &devices, Some("rto_guess10")).await;
    assert_eq!(limited.status(), 429);
    let wait = retry_after(&limited);
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    // The address is limited, not the token: even the right one waits.
    assert_eq!(get(&client, &devices, Some(&good)).await.status(), 429);
    // A request without a token checks nothing and costs nothing.
    assert_eq!(get(&client, &devices, None).await.status(), 401);
    // The editor's routes and the login count the same way.
    let editor = format!("{}/devices/pump-1/editor/", hub.api());
    assert_eq!(get(&client, &editor, Some("rto_guess11")).await.status(), 429);
    let login = client
        .post(format!("{}/api/login", hub.api()))
        .json(&serde_json::json!({ "name": "ops", "password": "whatever-it-is-here" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 429);

    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(get(&client, &devices, Some(&good)).await.status(), 200, "after the wait");
}
