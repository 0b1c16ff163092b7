//! The HTTP client openidconnect makes its requests with (discovery, keys, token, userinfo):
//! the workspace's reqwest over rustls with ring, handed to openidconnect through its
//! `AsyncHttpClient` trait. openidconnect's own reqwest integration is for reqwest 0.12, which
//! would bring a second reqwest and a second TLS setup into the hub. The client never follows
//! redirects (openidconnect's advice: a redirect could point a token request anywhere), bounds
//! every request by the configured timeout and every answer's size, and takes proxies from the
//! environment (`HTTPS_PROXY`, `NO_PROXY`, …), as reqwest does by default.

use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The largest answer read from a provider: discovery documents and key sets are a few KiB.
const MAX_ANSWER: usize = 1 << 20;

/// Why a request to the provider got no answer to read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be made or its answer not read (connection, TLS, timeout).
    #[error("{0}")]
    Request(#[source] reqwest::Error),
    /// openidconnect's request could not be turned into a reqwest one (cannot happen for the
    /// requests it makes).
    #[error("cannot send this request: {0}")]
    Build(#[source] reqwest::Error),
    /// The answer is larger than any provider's should be.
    #[error("the answer is larger than {MAX_ANSWER} bytes")]
    TooLarge,
    /// The answer could not be handed back as an `http::Response`.
    #[error("unusable answer: {0}")]
    Response(#[source] http::Error),
}

impl HttpError {
    /// Whether the provider could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, HttpError::Request(e) if e.is_connect() || e.is_timeout())
    }
}

/// A reqwest client for one provider.
#[derive(Clone)]
pub struct HttpClient(reqwest::Client);

impl HttpClient {
    pub fn new(tls: Arc<rustls::ClientConfig>, timeout: Duration) -> Result<HttpClient, HttpError> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(Arc::unwrap_or_clone(tls))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(HttpError::Build)?;
        Ok(HttpClient(client))
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let request = reqwest::Request::try_from(request).map_err(HttpError::Build)?;
        let mut response = self.0.execute(request).await.map_err(HttpError::Request)?;
        let mut builder = http::Response::builder().status(response.status()).version(response.version());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(HttpError::Request)? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(HttpError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        builder.body(body).map_err(HttpError::Response)
    }
}

impl<'c> AsyncHttpClient<'c> for HttpClient {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
