//! Asking an npm registry for packages' metadata documents, bounded in time so that an SBOM
//! never waits long for a registry it cannot reach.
//!
//! The agent's HTTP client (`crate::http_client`: rustls with ring, servers checked against the
//! system's CA certificates, proxies from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` as npm and curl
//! take them). [`LIMITS`] holds the bounds: each request (connect, TLS, answer and body) has
//! [`Limits::per_request`], all of them together [`Limits::deadline`], and at most
//! [`Limits::concurrency`] are in flight, their connections kept alive in the client's pool. The
//! first failure that says the registry cannot answer (no connection, no answer in time, a
//! status other than 200 or 404, an answer that is no package document) ends every lookup at
//! once: an unreachable registry costs one timeout, not one per package. `.npmrc` settings
//! (auth, CA files) and credentials in the registry's URL are not used.

use super::latest::{self, Answers, LatestError};
use crate::http_client::{self, HttpClientError};
use redtether_host::error_chain;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

/// Why the registry, or one package in it, gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the npm registry {registry:?} is no URL: {source}")]
    NotAUrl {
        registry: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("the npm registry {registry:?} is no http or https URL")]
    NotHttp { registry: String },
    #[error("the npm registry {registry:?} names no host")]
    NoHost { registry: String },
    /// No client for an `https` registry: the system's CA certificates are not usable.
    #[error(transparent)]
    Client(#[from] HttpClientError),
    #[error("cannot make the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error("cannot start the lookups: {0}")]
    Runtime(#[source] std::io::Error),
    /// Neither the registry nor a proxy in front of it took the connection.
    #[error("{url}: cannot connect: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} did not answer within {}", humantime::format_duration(*limit))]
    Timeout { url: String, limit: Duration },
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: reqwest::StatusCode },
    #[error("{url}: the answer broke off: {source}")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: {source}")]
    NotADocument {
        url: String,
        #[source]
        source: LatestError,
    },
    /// Only this package stays without an answer.
    #[error("its metadata document is bigger than {max} bytes")]
    TooBig { max: usize },
}

impl RegistryError {
    /// Whether the registry as a whole cannot answer, so that asking it about more packages is
    /// no use; otherwise only one package has no answer.
    fn ends_lookups(&self) -> bool {
        !matches!(self, RegistryError::TooBig { .. })
    }

    /// A failed request, told apart by what failed. The URL is left out of reqwest's own text:
    /// it leads the message already.
    fn of_request(url: &str, source: reqwest::Error) -> RegistryError {
        let url = url.to_string();
        let source = source.without_url();
        if source.is_connect() {
            RegistryError::Connect { url, source }
        } else {
            RegistryError::Request { url, source }
        }
    }
}

/// Where requests go: the registry's URL without any `user:password@` (registry credentials
/// are not used), its host, and whether it needs TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Base {
    https: bool,
    host: String,
    url: String,
}

impl Base {
    fn parse(registry: &str) -> Result<Base, RegistryError> {
        let uri: http::Uri =
            registry.parse().map_err(|source| RegistryError::NotAUrl { registry: registry.to_string(), source })?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(RegistryError::NotHttp { registry: registry.to_string() }),
        };
        let authority = uri.authority().ok_or_else(|| RegistryError::NoHost { registry: registry.to_string() })?;
        let host_port = authority.as_str().rsplit('@').next().unwrap_or_default();
        let scheme = if https { "https" } else { "http" };
        Ok(Base { https, host: authority.host().to_string(), url: format!("{scheme}://{host_port}{}", uri.path()) })
    }
}

struct Shared {
    base: Base,
    client: reqwest::Client,
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
    let shared = match prepare(registry, names, limits) {
        Ok(shared) => Arc::new(shared),
        Err(e) => return Answers { failure: Some(error_chain(&e)), ..answers },
    };
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
            Ok(Some((name, Err(e)))) if !e.ends_lookups() => {
                tracing::warn!("sbom: no latest version for {name}: {}", error_chain(&e));
            }
            Ok(Some((_, Err(e)))) => {
                answers.failure = Some(error_chain(&e));
                break;
            }
        }
    }
    // Whatever is still in flight ends here: after a failure or the deadline, nobody waits for it.
    workers.abort_all();
    answers
}

fn prepare(registry: &str, names: &[String], limits: Limits) -> Result<Shared, RegistryError> {
    let base = Base::parse(registry)?;
    // A plain-http registry needs no CA certificates (unless a proxy speaks TLS).
    let builder = if base.https { http_client::internet()? } else { http_client::internet_plain_http() };
    // A kept-alive connection that the registry or a proxy closed fails the request sent on it
    // before any answer comes: that request is sent again (up to 3 times; no more load than
    // that, so no retry budget). hyper's pool cannot always see the close coming: tinyproxy, for
    // one, answers in HTTP/1.0 and closes, and a connection can be handed to the next request in
    // the moment before hyper notices; about one request in ten met one in the proxy test.
    let retry =
        reqwest::retry::for_host(base.host.clone()).max_retries_per_request(3).no_budget().classify_fn(|attempt| {
            if attempt.error().is_some_and(closed_before_answer) { attempt.retryable() } else { attempt.success() }
        });
    let client = builder
        .user_agent(concat!("redtether/", env!("CARGO_PKG_VERSION")))
        // A redirect is an answer other than 200 or 404, as it always was here: not followed.
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(limits.concurrency)
        .retry(retry)
        .build()
        .map_err(RegistryError::Build)?;
    Ok(Shared { base, client, queue: Mutex::new(names.iter().cloned().collect()), limits })
}

/// Whether a request failed because its connection closed before the answer began.
fn closed_before_answer(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message) {
            return true;
        }
        cause = error.source();
    }
    false
}

type Outcome = (String, Result<Option<String>, RegistryError>);

async fn worker(shared: Arc<Shared>, tx: mpsc::UnboundedSender<Outcome>) {
    loop {
        let Some(name) = shared.queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
            return;
        };
        let url = latest::package_url(&shared.base.url, &name);
        let result = match tokio::time::timeout(shared.limits.per_request, fetch(&shared, &url)).await {
            Ok(result) => result,
            Err(_) => Err(RegistryError::Timeout { url, limit: shared.limits.per_request }),
        };
        let stop = matches!(&result, Err(e) if e.ends_lookups());
        if tx.send((name, result)).is_err() || stop {
            return;
        }
    }
}

/// One package's `dist-tags.latest` (`None`: the registry does not know it).
async fn fetch(shared: &Shared, url: &str) -> Result<Option<String>, RegistryError> {
    let mut response = shared
        .client
        .get(url)
        .header(reqwest::header::ACCEPT, latest::ACCEPT)
        .send()
        .await
        .map_err(|e| RegistryError::of_request(url, e))?;
    let max = shared.limits.max_body;
    if response.content_length().is_some_and(|length| length > max as u64) {
        return Err(RegistryError::TooBig { max });
    }
    // Read to the end whatever the status, so the connection can be used again.
    let mut body = Vec::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|source| RegistryError::Body { url: url.to_string(), source })?
    {
        if body.len() + chunk.len() > max {
            return Err(RegistryError::TooBig { max });
        }
        body.extend_from_slice(&chunk);
    }
    match response.status() {
        reqwest::StatusCode::OK => {
            latest::latest_of(&body).map_err(|source| RegistryError::NotADocument { url: url.to_string(), source })
        }
        reqwest::StatusCode::NOT_FOUND => Ok(None),
        status => Err(RegistryError::Status { url: url.to_string(), status }),
    }
}

/// Blocking: [`lookup`] on a runtime of its own (one thread), which is shut down without waiting
/// for anything left over (a name resolution that hangs, say).
pub fn lookup_blocking(registry: &str, names: &[String], limits: Limits) -> Answers {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            return Answers { failure: Some(error_chain(&RegistryError::Runtime(e))), ..Answers::default() };
        }
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
            Base::parse("https://registry.npmjs.org").unwrap(),
            Base { https: true, host: "registry.npmjs.org".into(), url: "https://registry.npmjs.org/".into() }
        );
        assert_eq!(
            Base::parse("http://user:secret@127.0.0.1:4873/npm").unwrap(),
            Base { https: false, host: "127.0.0.1".into(), url: "http://127.0.0.1:4873/npm".into() },
            "credentials are not sent"
        );
        assert_eq!(
            Base::parse("http://[::1]:8080").unwrap(),
            Base { https: false, host: "[::1]".into(), url: "http://[::1]:8080/".into() }
        );
        assert!(Base::parse("ftp://example.org").unwrap_err().to_string().contains("no http or https URL"));
        assert!(Base::parse("registry.npmjs.org").is_err());
        assert!(Base::parse("not a url").is_err());
    }
}
