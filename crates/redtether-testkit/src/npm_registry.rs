//! Stand-ins for the npm registry, so tests never depend on the internet: a real HTTP server on
//! an ephemeral loopback port (or HTTPS, with a certificate the test gives it) that serves
//! metadata documents the way registry.npmjs.org does (under a path prefix, scoped names as
//! `@scope%2fname`, 404 for unknown packages) and records every request; and a listener that
//! accepts connections and never answers.

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
    /// The `Via` header: a proxy that forwarded the request names itself there.
    pub via: Option<String>,
}

pub struct Registry {
    /// `http://127.0.0.1:PORT/npm/` (`https://` when started with a certificate), with a
    /// trailing slash as people write it in `.npmrc`.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Registry {
    /// Serves `dist-tags.latest` = the version given for each name; every other name is unknown.
    pub fn start(latest: &[(&str, &str)]) -> Registry {
        Registry::serve(latest, None)
    }

    /// [`Registry::start`] over TLS, with the certificate chain and key given (PEM).
    pub fn start_tls(latest: &[(&str, &str)], cert_pem: &str, key_pem: &str) -> Registry {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()).map(Result::unwrap).collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(redtether_pki::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Registry::serve(latest, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn serve(latest: &[(&str, &str)], tls: Option<tokio_rustls::TlsAcceptor>) -> Registry {
        let latest: Arc<BTreeMap<String, String>> =
            Arc::new(latest.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = seen.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (latest, log, tls) = (latest.clone(), log.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let response = answer(&latest, &log, &request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await,
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else { return };
                            http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await
                        }
                    };
                });
            }
        });
        Registry { url: format!("{scheme}://{addr}{PREFIX}"), seen, _runtime: runtime }
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
    let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (accept, via) = (header(hyper::header::ACCEPT), header(hyper::header::VIA));
    log.lock().unwrap().push(Seen { path: path.clone(), accept, via });
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
