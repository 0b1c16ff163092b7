//! `redtether-hub`: the platform's end of the tunnel. It keeps a certificate authority, enrolls
//! devices with one-time tokens, accepts their mutually authenticated QUIC tunnels, tracks what
//! they report, and lets operators see and command them through an HTTP API.
//!
//! ```text
//! <hub state>/  lock, control.sock, ca.pem, ca.key, server.pem, server.key, server.names,
//!               reset.key, cid.key, signing.key, credentials.key (all keys 0600), db/ (sled
//!               registry), api-tls/,
//!               audit.jsonl (the hub's hash-chained audit trail, 0600)
//! ```

mod accounts_api;
pub mod alerts;
pub mod api;
mod assertions;
mod audit_cli;
mod audit_view;
pub mod caller;
pub mod cli;
pub mod cluster;
pub mod config;
mod console;
pub mod control;
mod deploy_api;
mod editor;
mod endpoint;
mod enroll;
pub mod first_owner;
mod fleet_audit_api;
mod groups_api;
pub mod identity;
pub mod journal;
pub mod keys;
mod login;
mod logs_api;
mod logs_follow;
mod logs_source;
pub mod metrics;
mod metrics_api;
pub mod migrate_store;
mod operators_api;
mod pipelines_api;
mod policy_api;
mod policy_body;
pub mod portable;
mod registry;
pub mod rollout;
mod rollouts_api;
mod sbom_view;
mod self_service;
mod session;
mod setup;
mod setup_page;
pub mod sso;
mod sso_login;
pub mod store;
pub mod store_settings;

/// The hub's version, as reported by `--version` and the tunnel's `welcome`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

use config::HubSettings;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use redtether_host::control::ControlServer;
use redtether_host::notify::Notifier;
use redtether_host::signals::Signals;
use redtether_host::state_dir::{StateDir, StateDirError};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use store_settings::StoreSettings;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Endpoint(#[from] endpoint::EndpointError),
    #[error("cannot listen on {addr} (api_listen): {source}")]
    Api {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} (tcp.listen): {source}")]
    Tcp {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] redtether_host::tls_server::TlsError),
    #[error(transparent)]
    Control(#[from] redtether_host::control::ControlError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("[auth.oidc]: {0}")]
    Oidc(#[from] sso::oidc::OidcError),
    /// The first owner could not be made on a start with no operator.
    #[error("cannot make the first owner: {0}")]
    FirstOwner(#[from] control::RequestError),
    /// `[metrics] listen` could not be bound.
    #[error(transparent)]
    Metrics(#[from] redtether_host::metrics_server::MetricsListenError),
    #[error(transparent)]
    Alerts(#[from] alerts::AlertsError),
    #[error(transparent)]
    StorePassword(#[from] store_settings::PasswordFileError),
    /// The PostgreSQL store could not be opened.
    #[error("{0}")]
    PgStore(#[from] store::postgres::PgSetupError),
    #[error(transparent)]
    ClusterKeys(#[from] cluster::keys::ClusterKeyError),
    #[error(transparent)]
    ClusterTls(#[from] cluster::tls::ClusterTlsError),
    /// `[cluster] listen` could not be bound.
    #[error("cluster.listen {addr}: {source}")]
    ClusterListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Source addresses whose failed token checks are remembered at once (the oldest are forgotten).
const FAILED_AUTH_ADDRESSES: usize = 4096;

/// Runs the hub until SIGTERM or SIGINT.
pub async fn run(settings: HubSettings) -> Result<(), HubError> {
    let notifier = Notifier::from_env();
    let mut signals = Signals::install().map_err(HubError::Signals)?;
    let dir = StateDir::new(&settings.state_dir).owned_by("redtether hub");
    // 0700 as the agent's: the registry holds TOTP secrets and password hashes, and outside
    // systemd (whose StateDirectoryMode does this) nothing else keeps other users out.
    dir.create()?;
    let _lock = dir.lock()?;
    let store = open_store(&settings.store, dir.root())?;
    let mut hub_keys = keys::load_or_create(dir.root(), &settings.names, SystemTime::now())?;
    let peers = match &settings.cluster {
        Some(c) => Some(join_cluster(c, &store, &dir, &settings.names, &mut hub_keys).await?),
        None => None,
    };
    let keys = Arc::new(hub_keys);
    let revoked = Arc::new(RwLock::new(store.revoked_serials()?.into_iter().collect::<HashSet<_>>()));
    let idle_timeout = if settings.cluster.is_some() { endpoint::CLUSTER_IDLE_TIMEOUT } else { endpoint::IDLE_TIMEOUT };
    let quic = endpoint::bind(settings.listen, &keys, Arc::clone(&revoked), idle_timeout)?;
    let quic_addr = quic.endpoint.local_addr().unwrap_or(settings.listen);
    let tcp_listener = match settings.tcp_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|source| HubError::Tcp { addr, source })?),
        None => None,
    };
    let tcp_addr = tcp_listener.as_ref().and_then(|l| l.local_addr().ok());
    let api_listener = tokio::net::TcpListener::bind(settings.api_listen)
        .await
        .map_err(|source| HubError::Api { addr: settings.api_listen, source })?;
    let api_addr = api_listener.local_addr().unwrap_or(settings.api_listen);
    let api_tls = settings
        .api_tls
        .as_ref()
        .map(|t| redtether_host::tls_server::acceptor(t, "api.tls", &dir, "api-tls"))
        .transpose()?;
    let control = ControlServer::bind(&dir.control_socket())?;
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => Some(redtether_host::metrics_server::bind(addr, "metrics.listen").await?),
        None => None,
    };
    // Only now that every port is bound: a start that fails on a busy port must not make the
    // owner whose setup link it then never prints.
    let setup_secs = settings.auth.setup_code_lifetime.as_secs();
    let first_owner = match &settings.first_owner {
        Some(name) => first_owner::ensure(&*store, name, setup_secs, redtether_proto::time::unix_now())?,
        None => None,
    };
    let ca_fingerprint = keys.ca_fingerprint()?;

    let registry = match &peers {
        Some((member, ..)) => registry::Registry::in_cluster(Arc::clone(member)),
        None => registry::Registry::default(),
    };
    let metrics = Arc::new(metrics::HubMetrics::new(Arc::clone(&store), registry.clone()));
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let signer = ring::signature::Ed25519KeyPair::from_pkcs8(&keys.signing_pkcs8).map_err(|e| {
        HubError::Keys(keys::KeyError::Unusable { path: dir.root().join("signing.key"), reason: e.to_string() })
    })?;
    let signer = Arc::new(signer);
    let credentials_key = Arc::new(keys.credentials.clone());
    let rollouts = Arc::new(rollout::Rollouts::load(
        Arc::clone(&store),
        registry.clone(),
        Arc::clone(&signer),
        Arc::clone(&credentials_key),
    )?);
    let api = Arc::new(api::Api {
        store: Arc::clone(&store),
        registry: registry.clone(),
        signer: Arc::clone(&signer),
        assertions: assertions::Assertions::new(Arc::clone(&signer)),
        rollouts: Arc::clone(&rollouts),
        credentials_key: Arc::clone(&credentials_key),
        tasks: tasks.clone(),
        secure_cookies: api_tls.is_some(),
        failed_auth: redtether_host::ratelimit::Limiter::new(
            api::FAILED_AUTH_PER_SECOND,
            api::FAILED_AUTH_BURST,
            FAILED_AUTH_ADDRESSES,
        ),
        failed_logins: redtether_host::ratelimit::Limiter::new(
            api::FAILED_AUTH_PER_SECOND,
            api::FAILED_AUTH_BURST,
            FAILED_AUTH_ADDRESSES,
        ),
        auth: settings.auth.clone(),
        pending_logins: Default::default(),
        enroll: operators_api::EnrollHint {
            hub: settings.device_address(quic_addr),
            ca_fingerprint: ca_fingerprint.clone(),
            token_lifetime: settings.enroll_token_lifetime,
        },
        sso: sso_login::Sso::new(settings.auth.oidc.clone().map(sso::oidc::OidcLogin::new).transpose()?),
        metrics: Arc::clone(&metrics),
    });
    let accepting = Arc::new(endpoint::Accepting {
        store: Arc::clone(&store),
        registry: registry.clone(),
        enrollment: Arc::new(enroll::Enrollment {
            store: Arc::clone(&store),
            keys: Arc::clone(&keys),
            cert_lifetime: settings.device_cert_lifetime,
            signer: Arc::clone(&signer),
        }),
        metrics: Arc::clone(&metrics),
    });
    if let Some(listener) = tcp_listener {
        let tls = endpoint::tcp_tls(&keys, Arc::clone(&revoked))?;
        tasks.spawn(Arc::clone(&accepting).run_tcp(listener, tls, tasks.clone(), cancel.child_token()));
    }
    tasks.spawn(accepting.run(quic.endpoint.clone(), tasks.clone(), cancel.child_token()));
    tasks.spawn(Arc::clone(&rollouts).run(tasks.clone(), cancel.child_token()));
    let hub_name = settings.device_address(quic_addr);
    alerts::start(&settings.alerts, hub_name, &store, &registry, dir.root(), &tasks, &cancel)?;
    tasks.spawn(console::sample_presence(Arc::clone(&store), registry.clone(), cancel.child_token()));
    tasks.spawn(serve_api(
        api_listener,
        api_tls,
        Arc::clone(&api),
        Origin::Operators,
        tasks.clone(),
        cancel.child_token(),
    ));
    if let Some((member, listener, acceptor)) = peers {
        tasks.spawn(serve_api(
            listener,
            Some(acceptor),
            Arc::clone(&api),
            Origin::Hubs,
            tasks.clone(),
            cancel.child_token(),
        ));
        tasks.spawn(cluster::doorbell::run(Arc::clone(&member), registry.clone(), cancel.child_token()));
        tasks.spawn(cluster::presence::run(member, registry.clone(), cancel.child_token()));
        tasks.spawn(refresh_revoked(Arc::clone(&store), Arc::clone(&revoked), cancel.child_token()));
    }
    let metrics_listen = metrics_listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string());
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tasks.spawn(redtether_host::metrics_server::serve(
            listener,
            metrics.render_fn(),
            tasks.clone(),
            cancel.child_token(),
        ));
        tracing::info!(%addr, "serving metrics at /metrics");
    }
    let handler = Arc::new(control::HubControl {
        store: Arc::clone(&store),
        api: Arc::clone(&api),
        revoked,
        ca_fingerprint: ca_fingerprint.clone(),
        listen: quic_addr.to_string(),
        api_listen: api_addr.to_string(),
        metrics_listen,
        tcp_listen: tcp_addr.map(|a| a.to_string()),
    });
    tasks.spawn(control.serve(handler, cancel.child_token()));
    let notifier = Arc::new(notifier);
    if let Some(interval) = redtether_host::notify::watchdog_interval() {
        tasks.spawn(redtether_host::notify::keep_watchdog(interval, Arc::clone(&notifier), cancel.child_token()));
    }
    tasks.close();

    let console = first_owner::console_url(api_addr, settings.api_tls.is_some());
    tracing::info!(version = crate::VERSION, listen = %quic_addr, api = %api_addr, %console, ca_fingerprint = %ca_fingerprint, "redtether hub ready");
    announce(&console, first_owner.as_ref(), setup_secs);
    notifier.ready(&format!("listening on {quic_addr}, API on {api_addr}"));
    let signal = signals.next().await;
    tracing::info!(%signal, "stopping");
    notifier.stopping("stopping");
    cancel.cancel();
    tokio::select! {
        _ = tasks.wait() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("shutdown took too long"),
        _ = signals.next() => {}
    }
    quic.endpoint.wait_idle().await;
    store.flush()?;
    Ok(())
}

/// This hub's part in a cluster: the shared keys taken (its own keys reloaded when they were
/// replaced), its peer certificate, the hubs' listener bound, joined.
async fn join_cluster(
    settings: &cluster::config::ClusterSettings,
    store: &Arc<store::HubStore>,
    dir: &StateDir,
    names: &[String],
    hub_keys: &mut keys::HubKeys,
) -> Result<(Arc<cluster::Cluster>, tokio::net::TcpListener, tokio_rustls::TlsAcceptor), HubError> {
    let kek = cluster::keys::Kek::load(&settings.key_file)?;
    if cluster::keys::share(&**store, &kek, dir.root())? {
        *hub_keys = keys::load_or_create(dir.root(), names, SystemTime::now())?;
    }
    let tls = cluster::tls::load(dir.root())?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| HubError::ClusterListen { addr: settings.listen, source })?;
    let bound = listener.local_addr().unwrap_or(settings.listen);
    let address = settings.advertise.clone().unwrap_or_else(|| bound.to_string());
    let member = Arc::new(cluster::Cluster::new(settings.hub_id.clone(), address, Arc::clone(store), tls.client));
    member.join()?;
    tracing::info!(hub = %settings.hub_id, listen = %bound, address = %member.address, "cluster: joined");
    Ok((member, listener, tokio_rustls::TlsAcceptor::from(Arc::new(tls.server))))
}

/// The store `[store]` names: the embedded one in the state directory, or PostgreSQL (whose
/// client keeps this hub's journal in the state directory too).
pub(crate) fn open_store(
    settings: &StoreSettings,
    state_dir: &std::path::Path,
) -> Result<Arc<store::HubStore>, HubError> {
    Ok(match settings {
        StoreSettings::Embedded => Arc::new(store::SledStore::open(state_dir)?),
        StoreSettings::Postgres(pg) => {
            let options = pg.options()?;
            let opened = store::postgres::PgStore::open(&options, state_dir, &pg.hub_id)?;
            tracing::info!(url = %store_settings::redacted(&pg.url), hub = %pg.hub_id, "hub store: PostgreSQL");
            Arc::new(opened)
        }
    })
}

/// Tells whoever started the hub where its console is and, on the start that made the first
/// owner, the link that sets that account up.
fn announce(console: &str, made: Option<&first_owner::Made>, setup_secs: u64) {
    println!("redtether hub: console at {console}");
    let Some(made) = made else { return };
    let until = redtether_proto::time::format_unix(redtether_proto::time::unix_now().saturating_add(setup_secs));
    tracing::info!(operator = %made.name, %until, "first owner made; its setup link is on standard output");
    // The code goes to standard output once, not into the log's fields. Under systemd standard
    // output is the journal too, which root and the adm and systemd-journal groups read: that
    // is acceptable because the code works once, expires (`[auth] setup_code_lifetime`), only
    // sets up this one account, and an account someone else set up shows (the owner's link
    // stops working; `operator reset-2fa` makes a new one and the audit trail has the setup).
    // Printing it is the point: it is how the first owner gets in at all.
    println!(
        "redtether hub: first owner {:?} made; set it up before {until} at\n  {}",
        made.name,
        first_owner::setup_url(console, &made.setup_code)
    );
}

/// Who a listener of the API serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Operators, browsers, scripts: `api_listen`.
    Operators,
    /// The other hubs of the cluster, forwarding operators' requests (`[cluster] listen`,
    /// mutual TLS): the operator's address is the one the forwarding hub saw.
    Hubs,
}

/// The operator's address a request is from, and whether it may be served: on the operators'
/// listener the cluster's headers are dropped (no one outside can claim to be a hub); on the
/// hubs' listener they are required.
fn origin_of(
    req: &mut hyper::Request<hyper::body::Incoming>,
    origin: Origin,
    peer: std::net::IpAddr,
) -> Option<std::net::IpAddr> {
    match origin {
        Origin::Operators => {
            req.headers_mut().remove(cluster::FORWARDED_BY);
            req.headers_mut().remove(cluster::CLIENT_IP);
            Some(peer)
        }
        Origin::Hubs => {
            req.headers().get(cluster::FORWARDED_BY)?;
            req.headers().get(cluster::CLIENT_IP)?.to_str().ok()?.parse().ok()
        }
    }
}

/// In a cluster: the revoked certificates, read again every few seconds (another hub may have
/// revoked one; its session there is closed by that hub).
async fn refresh_revoked(
    store: Arc<store::HubStore>,
    revoked: Arc<RwLock<HashSet<String>>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.revoked_serials() {
            Ok(serials) => *revoked.write().unwrap_or_else(|e| e.into_inner()) = serials.into_iter().collect(),
            Err(e) => tracing::warn!(error = %e, "cluster: cannot read the revoked certificates"),
        }
    }
}

async fn serve_api(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    api: Arc<api::Api>,
    origin: Origin,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "operator API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small answers (and the remote editor's many small requests) go out at once.
        let _ = stream.set_nodelay(true);
        let (api, tls, cancel) = (Arc::clone(&api), tls.clone(), cancel.clone());
        tasks.spawn(async move {
            let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let api = Arc::clone(&api);
                async move {
                    let Some(client) = origin_of(&mut req, origin, peer.ip()) else {
                        return Ok(api::boxed(api::error(hyper::StatusCode::BAD_REQUEST, "not_forwarded")));
                    };
                    let (route, method, started) =
                        (metrics::routes::route_of(req.uri().path()), req.method().clone(), std::time::Instant::now());
                    let response = Arc::clone(&api).handle(req, client).await;
                    if let Ok(r) = &response {
                        api.metrics.api_answered(route, &method, r.status().as_u16(), started.elapsed());
                    }
                    response
                }
            });
            let builder =
                http1::Builder::new().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30)).clone();
            let served = async {
                match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                            Ok(Ok(s)) => builder.serve_connection(TokioIo::new(s), service).with_upgrades().await,
                            _ => Ok(()),
                        }
                    }
                    None => builder.serve_connection(TokioIo::new(stream), service).with_upgrades().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                result = served => if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "operator API connection ended with an error");
                },
            }
        });
    }
}

/// Unused body type marker, so `Full` is named in one place.
pub type ApiBody = Full<bytes::Bytes>;
