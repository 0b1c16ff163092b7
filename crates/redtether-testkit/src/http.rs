//! HTTP helpers against a running gate: credentials, the editor's login, deploys, and raw
//! requests written byte for byte (for what a well-behaved client would never send).

use std::io::{Read, Write};
use std::time::Duration;

/// A client for the agent and hub under test. The workspace's reqwest has no crypto provider
/// of its own (the agent hands each of its clients a ring-backed rustls configuration, so that
/// ring stays its only provider), so `reqwest::Client::new()` would panic: test clients are made
/// here. They speak plain HTTP on loopback, so no CA is trusted.
pub fn client() -> reqwest::Client {
    client_builder().build().unwrap()
}

/// [`client`]'s builder, for a client with settings of its own.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(plain_http_only())
}

/// [`client_builder`] for a blocking client.
pub fn blocking_client_builder() -> reqwest::blocking::ClientBuilder {
    reqwest::blocking::Client::builder().tls_backend_preconfigured(plain_http_only())
}

fn plain_http_only() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(redtether_pki::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

#[derive(Debug, Clone, Copy)]
pub enum Cred<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

pub fn with(req: reqwest::RequestBuilder, cred: Cred<'_>) -> reqwest::RequestBuilder {
    match cred {
        Cred::None => req,
        Cred::Basic(u, p) => req.basic_auth(u, Some(p)),
        Cred::Bearer(t) => req.bearer_auth(t),
    }
}

/// A deploy as the editor sends it (API v2), as `cred`.
pub async fn deploy(
    client: &reqwest::Client,
    gate: &str,
    flows: &serde_json::Value,
    cred: Cred<'_>,
) -> reqwest::Response {
    with(client.post(format!("{gate}/device-editor/flows")), cred)
        .header("content-type", "application/json")
        .header("node-red-deployment-type", "full")
        .header("node-red-api-version", "v2")
        .body(serde_json::json!({ "flows": flows }).to_string())
        .send()
        .await
        .unwrap()
}

/// The editor's login (`POST auth/token`, OAuth2 password grant); returns the session token.
pub async fn login(
    client: &reqwest::Client,
    gate: &str,
    user: &str,
    password: &str,
) -> Result<String, reqwest::StatusCode> {
    let r = client
        .post(format!("{gate}/device-editor/auth/token"))
        .form(&[
            ("client_id", "node-red-editor"),
            ("grant_type", "password"),
            ("scope", "*"),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    if !r.status().is_success() {
        return Err(r.status());
    }
    let body: serde_json::Value = r.json().await.unwrap();
    Ok(body["access_token"].as_str().unwrap().to_string())
}

/// A flow with an HTTP-In echo at `POST /echo`.
pub fn echo_flow() -> serde_json::Value {
    serde_json::json!([
        {"id": "tab1", "type": "tab", "label": "test"},
        {"id": "in1", "type": "http in", "z": "tab1", "url": "/echo", "method": "post", "upload": false, "wires": [["out1"]]},
        {"id": "out1", "type": "http response", "z": "tab1", "statusCode": "", "headers": {}, "wires": []},
        {"id": "in2", "type": "http in", "z": "tab1", "url": "/api/data", "method": "get", "upload": false, "wires": [["fn2"]]},
        {"id": "fn2", "type": "function", "z": "tab1", "func": "msg.payload = {user: msg.req.headers['x-redtether-user'] || null, auth: msg.req.headers['authorization'] || null}; return msg;", "outputs": 1, "wires": [["out1"]]}
    ])
}

/// Sends `bytes` on a fresh connection and returns everything the gate answered until it closed
/// the connection or went quiet for a moment.
pub fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in `raw` output, or 0 if there was none.
pub fn status_of(response: &str) -> u16 {
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Every status code in `raw` output (pipelined responses follow each other's bodies directly).
pub fn statuses_of(response: &str) -> Vec<u16> {
    response.match_indices("HTTP/1.").filter_map(|(i, _)| response.get(i + 9..i + 12)?.parse().ok()).collect()
}

/// The value of hidden field `name` in an HTML form.
pub fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("{name} in {page}")) + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}
