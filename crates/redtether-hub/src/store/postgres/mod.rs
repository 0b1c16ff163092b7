//! The domain traits (`super::domain`) on PostgreSQL, shared by several hubs: what one hub
//! writes, the others read, and every race between hubs is settled by the database (a
//! conditional `UPDATE`, `ON CONFLICT`, a row lock), never by a lock in one hub's memory.
//!
//! Connections come from a pool (deadpool) of tokio-postgres clients, over TLS (rustls with
//! ring, the system's CAs or one CA file) when the URL asks for it (`sslmode=require`; any
//! sslmode but `disable` checks the server's certificate). The schema is migrated when the
//! store opens (`migrate`).
//!
//! The hub's store API is synchronous, as sled is. The client and its connections run on a
//! small runtime of the store's own; a caller waits for its statement as it waits for sled's
//! `fdatasync`, inside `block_in_place` on the hub's multi-threaded runtime so the worker's
//! other tasks move on meanwhile. Writes that answer something (an
//! enrollment, an audit acknowledgement) commit with `synchronous_commit` on, whatever the
//! server's default.

mod audit;
mod deployments;
mod devices;
mod doorbell;
mod fleet;
mod groups;
mod import;
mod journal;
pub mod migrate;
mod operators;
mod policies;
mod presence;
mod tokens;

use super::{StoreError, StoreLatency};
use crate::journal::HubJournal;
use crate::sso::config::TrustRoots;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user[:password]@host[:port]/database[?sslmode=require]`.
    pub url: String,
    /// The CAs the server's certificate must chain to; the system's when unset (`[store] ca_file`).
    pub ca_file: Option<PathBuf>,
    /// Connections kept open at most.
    pub pool_size: usize,
}

impl PgOptions {
    pub fn new(url: &str) -> PgOptions {
        PgOptions { url: url.to_string(), ca_file: None, pool_size: 16 }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PgSetupError {
    /// The client's runtime could not be started (no threads left).
    #[error("store client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The URL is not a PostgreSQL connection string.
    #[error("store url: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// No TLS configuration could be made for the database.
    #[error("store TLS: {0}")]
    Tls(#[from] crate::sso::tls::TlsError),
    /// The pool could not be built.
    #[error("store pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    /// No connection could be made.
    #[error("cannot connect to the store: {0}")]
    Connect(#[from] deadpool_postgres::PoolError),
    /// The database refused a migration step.
    #[error("store migration: {0}")]
    Migrate(#[from] tokio_postgres::Error),
    /// The hub's journal could not be opened or shared.
    #[error("{0}")]
    Journal(Box<StoreError>),
    /// A newer hub migrated this database.
    #[error("the store's schema is version {found}, newer than this hub knows ({known}): upgrade the hub")]
    SchemaTooNew { found: i32, known: i32 },
}

/// The hub's records in PostgreSQL.
pub struct PgStore {
    pool: Pool,
    /// Connections whose commits do not wait for the disk (`synchronous_commit = off`): for
    /// what the hub refreshes on every connection and beat (a device's last status, who holds
    /// it, events nothing waits for), as the embedded store does not flush those either. They
    /// reach the disk within a fraction of a second, or with the next synchronous commit.
    soft: Pool,
    /// This hub's id among the hubs sharing the database.
    hub: String,
    /// This hub's own trail (`crate::journal`), in its state directory.
    journal: HubJournal,
    /// Every event this hub records, for whoever watches (the alerts).
    recorded: tokio::sync::broadcast::Sender<redtether_proto::audit::StoredEvent>,
    latency: StoreLatency,
    /// How to open the doorbell's own connection (`doorbell`).
    listen: (tokio_postgres::Config, tokio_postgres_rustls::MakeRustlsConnect),
    /// Drives the connections; shut down (without waiting) when the store is dropped.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

/// Recorded events a slow watcher may fall behind by before it misses some.
const RECORDED_BACKLOG: usize = 4096;

/// The client runtime's threads: the connections' I/O, not the statements' callers.
const CLIENT_THREADS: usize = 2;

/// How long a request waits for a pooled connection, or for a new one to be made, before it
/// fails: an unreachable database is an error the caller reports, not a hang.
const POOL_WAIT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl PgStore {
    /// Connects as hub `hub`, migrates the schema to the newest version, and opens the hub's
    /// journal in `state_dir` (sharing what the database does not have of it yet).
    pub fn open(options: &PgOptions, state_dir: &Path, hub: &str) -> Result<PgStore, PgSetupError> {
        let journal = HubJournal::open(state_dir).map_err(|e| PgSetupError::Journal(Box::new(e.into())))?;
        let listen = Self::connection(options, "off")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(CLIENT_THREADS)
            .thread_name("hub-store-pg")
            .enable_all()
            .build()
            .map_err(PgSetupError::Runtime)?;
        let handle = runtime.handle().clone();
        let (pool, soft) = match wait(&handle, Self::connect(options)) {
            Ok(pools) => pools,
            Err(e) => {
                // Not a plain drop: the caller may be on a runtime, where that would block.
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let store = PgStore {
            pool,
            soft,
            listen,
            hub: hub.to_string(),
            journal,
            recorded: tokio::sync::broadcast::channel(RECORDED_BACKLOG).0,
            latency: StoreLatency::default(),
            runtime: Some(runtime),
            handle,
        };
        store.share_journal(state_dir).map_err(|e| PgSetupError::Journal(Box::new(e)))?;
        Ok(store)
    }

    /// The two pools: writes that answer something, and soft state.
    async fn connect(options: &PgOptions) -> Result<(Pool, Pool), PgSetupError> {
        // Whatever the server's default: a write is answered only once it is on disk.
        let pool = Self::pool(options, "on", options.pool_size)?;
        let soft = Self::pool(options, "off", options.pool_size.div_ceil(2))?;
        let mut client = pool.get().await?;
        migrate::migrate(&mut client).await?;
        drop(client);
        Ok((pool, soft))
    }

    /// How to connect: the URL's settings, this hub's name, the commit mode, TLS.
    fn connection(
        options: &PgOptions,
        synchronous_commit: &str,
    ) -> Result<(tokio_postgres::Config, tokio_postgres_rustls::MakeRustlsConnect), PgSetupError> {
        let mut config = tokio_postgres::Config::from_str(&options.url).map_err(PgSetupError::Url)?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("redtether-hub");
        config.options(format!("-c synchronous_commit={synchronous_commit}"));
        let roots = options.ca_file.clone().map_or(TrustRoots::System, TrustRoots::CaFile);
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*crate::sso::tls::client_config(&roots)?).clone());
        Ok((config, tls))
    }

    fn pool(options: &PgOptions, synchronous_commit: &str, size: usize) -> Result<Pool, PgSetupError> {
        let (config, tls) = Self::connection(options, synchronous_commit)?;
        let manager = Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        Ok(Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()?)
    }

    /// Runs `work` on the client's runtime and waits for it.
    fn wait<F>(&self, work: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        wait(&self.handle, work)
    }

    /// This hub's id.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// A pooled connection for soft state (see [`PgStore::soft`]).
    async fn soft_client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        Ok(self.soft.get().await?)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Blocks the calling thread until `work` is done on `handle`'s runtime. On a tokio worker the
/// wait is announced (`block_in_place`); on a single-threaded runtime, which cannot hand its
/// tasks over, `work` runs on a scoped thread of its own.
fn wait<F>(handle: &tokio::runtime::Handle, work: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|current| current.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| handle.block_on(work)),
        Ok(_) => std::thread::scope(|scope| match scope.spawn(|| handle.block_on(work)).join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
        Err(_) => handle.block_on(work),
    }
}

/// A record kept whole, as stored.
fn to_json<T: serde::Serialize>(record: &T) -> serde_json::Value {
    serde_json::to_value(record).expect("records always encode")
}

/// A record kept whole, read back.
fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(StoreError::Corrupt)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
