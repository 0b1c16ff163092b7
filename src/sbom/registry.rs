//! Asking an npm registry for packages' metadata documents, bounded in time so that an SBOM
//! never waits long for a registry it cannot reach.
//!
//! HTTP/1.1 with hyper, over TLS (rustls with ring, the system's CA certificates) for an
//! `https` registry. [`LIMITS`] holds the bounds: each request (connect, TLS, answer and body)
//! has [`Limits::per_request`], all of them together [`Limits::deadline`], and at most
//! [`Limits::concurrency`] are in flight, each worker reusing its connection. The first failure
//! that says the registry cannot answer (no connection, no answer in time, a status other than
//! 200 or 404, an answer that is no package document) ends every lookup at once: an unreachable
//! registry costs one timeout, not one per package. Proxies and `.npmrc` settings (auth, CA
//! files) are not used.

use super::latest::{self, Answers};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The bounds of the lookups.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_request: Duration,
    pub deadline: Duration,
    pub concurrency: usize,
    /// A bigger metadata document is not read (that package stays without an answer).
    pub max_body: usize,
}

pub const LIMITS: Limits = Limits {
    per_request: Duration::from_secs(5),
    deadline: Duration::from_secs(20),
    concurrency: 8,
    max_body: 16 << 20,
};

/// CA bundles of the common distributions, tried in order after `SSL_CERT_FILE`.
const CA_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Arch, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // RHEL
    "/etc/ssl/ca-bundle.pem",                            // openSUSE
    "/etc/pki/tls/cacert.pem",                           // OpenELEC
    "/etc/ssl/cert.pem",                                 // Alpine, BSDs
];

/// Where a registry is: how to connect, and the path its package URLs start with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    https: bool,
    /// Without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    /// `host[:port]`, for the `Host` header.
    authority: String,
}

impl Target {
    fn parse(registry: &str) -> Result<Target, String> {
        let uri: http::Uri = registry.parse().map_err(|e| format!("the npm registry {registry:?} is no URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("the npm registry {registry:?} is no http or https URL")),
        };
        let authority = uri.authority().ok_or_else(|| format!("the npm registry {registry:?} names no host"))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        // Without any user:password@ (not sent: registry credentials are not used).
        let authority = authority.as_str().rsplit('@').next().unwrap_or_default().to_string();
        Ok(Target { https, host, port, authority })
    }
}

/// Why one lookup failed.
enum Failure {
    /// The registry cannot answer: stop asking it.
    Registry(String),
    /// Only this package has no answer (its document is too big to read).
    Package(String),
}

type Sender = SendRequest<Empty<Bytes>>;

struct Shared {
    registry: String,
    target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
    queue: Mutex<VecDeque<String>>,
    limits: Limits,
}

/// Asks `registry` for each of `names`' `dist-tags.latest`, within `limits`. Never fails as a
/// whole: what could not be asked is in [`Answers::failure`] and [`Answers::out_of_time`].
/// Must run inside a tokio runtime (any flavour).
pub async fn lookup(registry: &str, names: &[String], limits: Limits) -> Answers {
    let mut answers = Answers::default();
    if names.is_empty() {
        return answers;
    }
    let target = match Target::parse(registry) {
        Ok(target) => target,
        Err(e) => return Answers { failure: Some(e), ..answers },
    };
    let tls = if target.https {
        match tls_connector() {
            Ok(tls) => Some(tls),
            Err(e) => return Answers { failure: Some(e), ..answers },
        }
    } else {
        None
    };
    let shared = Arc::new(Shared {
        registry: registry.to_string(),
        target,
        tls,
        queue: Mutex::new(names.iter().cloned().collect()),
        limits,
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..limits.concurrency.clamp(1, names.len()) {
        workers.spawn(worker(shared.clone(), tx.clone()));
    }
    drop(tx);
    let deadline = tokio::time::Instant::now() + limits.deadline;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => {
                answers.out_of_time = true;
                break;
            }
            Ok(None) => break,
            Ok(Some((name, Ok(latest)))) => {
                answers.found.insert(name, latest);
            }
            Ok(Some((name, Err(Failure::Package(reason))))) => {
                tracing::warn!("sbom: no latest version for {name}: {reason}");
            }
            Ok(Some((_, Err(Failure::Registry(reason))))) => {
                answers.failure = Some(reason);
                break;
            }
        }
    }
    // Whatever is still in flight ends here: after a failure or the deadline, nobody waits for it.
    workers.abort_all();
    answers
}

type Outcome = (String, Result<Option<String>, Failure>);

async fn worker(shared: Arc<Shared>, tx: mpsc::UnboundedSender<Outcome>) {
    let mut connection: Option<Sender> = None;
    loop {
        let Some(name) = shared.queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
            return;
        };
        let result = match tokio::time::timeout(shared.limits.per_request, fetch(&shared, &mut connection, &name)).await
        {
            Ok(result) => result,
            Err(_) => Err(Failure::Registry(format!(
                "{} did not answer within {}",
                latest::package_url(&shared.registry, &name),
                humantime::format_duration(shared.limits.per_request)
            ))),
        };
        let stop = matches!(result, Err(Failure::Registry(_)));
        if tx.send((name, result)).is_err() || stop {
            return;
        }
    }
}

/// One package's `dist-tags.latest` (`None`: the registry does not know it), on the worker's
/// connection if it is still open, else on a new one.
async fn fetch(shared: &Shared, connection: &mut Option<Sender>, name: &str) -> Result<Option<String>, Failure> {
    let url = latest::package_url(&shared.registry, name);
    let uri: http::Uri = url.parse().map_err(|e| Failure::Package(format!("{url} is no URL: {e}")))?;
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let request = || {
        http::Request::get(path.as_str())
            .header(http::header::HOST, &shared.target.authority)
            .header(http::header::ACCEPT, latest::ACCEPT)
            .header(http::header::USER_AGENT, concat!("redtether/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .expect("a GET request with valid headers")
    };
    // A kept-alive connection the registry closed meanwhile fails the request: retried once on a
    // new connection.
    let mut reused = false;
    if let Some(sender) = connection.as_mut() {
        reused = sender.ready().await.is_ok();
        if !reused {
            *connection = None;
        }
    }
    let response = loop {
        if connection.is_none() {
            *connection = Some(connect(shared).await.map_err(|e| Failure::Registry(format!("{url}: {e}")))?);
        }
        let sender = connection.as_mut().expect("connected above");
        match sender.send_request(request()).await {
            Ok(response) => break response,
            Err(_) if reused => {
                reused = false;
                *connection = None;
            }
            Err(e) => {
                *connection = None;
                return Err(Failure::Registry(format!("{url}: {e}")));
            }
        }
    };
    let status = response.status();
    let body = match Limited::new(response.into_body(), shared.limits.max_body).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            *connection = None;
            return Err(Failure::Package(format!(
                "its metadata document is bigger than {} bytes",
                shared.limits.max_body
            )));
        }
        Err(e) => {
            *connection = None;
            return Err(Failure::Registry(format!("{url}: {e}")));
        }
    };
    match status {
        http::StatusCode::OK => latest::latest_of(&body).map_err(|e| Failure::Registry(format!("{url}: {e}"))),
        http::StatusCode::NOT_FOUND => Ok(None),
        status => Err(Failure::Registry(format!("{url} answered {status}"))),
    }
}

async fn connect(shared: &Shared) -> Result<Sender, String> {
    let target = &shared.target;
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", target.host, target.port))?;
    let _ = tcp.set_nodelay(true);
    match &shared.tls {
        None => handshake(tcp).await,
        Some(tls) => {
            let name = ServerName::try_from(target.host.clone()).map_err(|e| format!("{}: {e}", target.host))?;
            let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS with {}: {e}", target.host))?;
            handshake(stream).await
        }
    }
}

async fn handshake<IO>(io: IO) -> Result<Sender, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let bundle = ca_bundle().ok_or_else(|| {
        format!(
            "no CA certificates found (SSL_CERT_FILE, {}): cannot check the registry's certificate",
            CA_BUNDLES.join(", ")
        )
    })?;
    let certs = CertificateDer::pem_file_iter(&bundle)
        .map_err(|e| format!("{}: {e}", bundle.display()))?
        .filter_map(Result::ok);
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{} holds no usable CA certificate", bundle.display()));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(redtether_pki::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn ca_bundle() -> Option<PathBuf> {
    let from_env = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()).map(PathBuf::from);
    from_env.into_iter().chain(CA_BUNDLES.iter().map(PathBuf::from)).find(|path| path.is_file())
}

/// Blocking: [`lookup`] on a runtime of its own (one thread), which is shut down without waiting
/// for anything left over (a name resolution that hangs, say).
pub fn lookup_blocking(registry: &str, names: &[String], limits: Limits) -> Answers {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return Answers { failure: Some(format!("cannot start the lookups: {e}")), ..Answers::default() },
    };
    let answers = runtime.block_on(lookup(registry, names, limits));
    runtime.shutdown_background();
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_of_registry_urls() {
        assert_eq!(
            Target::parse("https://registry.npmjs.org").unwrap(),
            Target {
                https: true,
                host: "registry.npmjs.org".into(),
                port: 443,
                authority: "registry.npmjs.org".into()
            }
        );
        assert_eq!(
            Target::parse("http://user:secret@127.0.0.1:4873/npm").unwrap(),
            Target { https: false, host: "127.0.0.1".into(), port: 4873, authority: "127.0.0.1:4873".into() }
        );
        assert_eq!(
            Target::parse("http://[::1]:8080").unwrap(),
            Target { https: false, host: "::1".into(), port: 8080, authority: "[::1]:8080".into() }
        );
        assert!(Target::parse("ftp://example.org").unwrap_err().contains("no http or https URL"));
        assert!(Target::parse("registry.npmjs.org").is_err());
        assert!(Target::parse("not a url").is_err());
    }
}
