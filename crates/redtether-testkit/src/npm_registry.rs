//! Stand-ins for the npm registry, so tests never depend on the internet: a real HTTP server on
//! an ephemeral loopback port that serves metadata documents the way registry.npmjs.org does
//! (under a path prefix, scoped names as `@scope%2fname`, 404 for unknown packages) and
//! records every request; and a listener that accepts connections and never answers.

use bytes::Bytes;
use http_body_util::Full;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The path the stand-in serves packages under, as a registry behind a repository manager does.
pub const PREFIX: &str = "/npm/";

/// One request the stand-in saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// As sent, not decoded: `/npm/@node-red%2fruntime`.
    pub path: String,
    pub accept: Option<String>,
}

pub struct Registry {
    /// `http://127.0.0.1:PORT/npm/`, with a trailing slash as people write it in `.npmrc`.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Registry {
    /// Serves `dist-tags.latest` = the version given for each name; every other name is unknown.
    pub fn start(latest: &[(&str, &str)]) -> Registry {
        let latest: Arc<BTreeMap<String, String>> =
            Arc::new(latest.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (latest, log) = (latest.clone(), log.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let response = answer(&latest, &log, &request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Registry { url: format!("http://{addr}{PREFIX}"), seen, _runtime: runtime }
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn forget(&self) {
        self.seen.lock().unwrap().clear();
    }
}

fn answer(
    latest: &BTreeMap<String, String>,
    log: &Mutex<Vec<Seen>>,
    request: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let accept = request.headers().get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok()).map(str::to_string);
    log.lock().unwrap().push(Seen { path: path.clone(), accept });
    let name = path.strip_prefix(PREFIX).map(percent_decode);
    let Some((name, version)) = name.and_then(|name| latest.get(&name).map(|v| (name, v))) else {
        return respond(404, serde_json::json!({"error": "Not found"}));
    };
    respond(
        200,
        serde_json::json!({
            "name": name,
            "dist-tags": {"latest": version, "next": format!("{version}-beta.1")},
            "versions": {
                version: {
                    "name": name,
                    "version": version,
                    "dist": {"tarball": format!("http://registry.invalid/{name}/-/{version}.tgz"), "shasum": "0"},
                },
            },
            "modified": "2026-11-27T07:00:00.000Z",
        }),
    )
}

fn respond(status: u16, body: serde_json::Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/vnd.npm.install-v1+json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A registry that accepts connections and never says a word; counts the connections.
pub struct Silent {
    pub url: String,
    accepted: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Silent {
    pub fn start() -> Silent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let held = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                held.lock().unwrap().push(stream); // kept open, never answered
            }
        });
        Silent { url: format!("http://{addr}"), accepted }
    }

    pub fn connections(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

/// The URL of a loopback port nothing listens on.
pub fn closed_port_url() -> String {
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    format!("http://{addr}")
}
