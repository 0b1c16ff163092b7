//! `[store]` in hub.toml: where the hub keeps its records. Absent, the embedded store in the
//! state directory (one hub); with `url`, PostgreSQL, which several hubs can share.
//!
//! ```toml
//! [store]
//! url = "postgres://hub@db.example.net/redtether?sslmode=require"
//! password_file = "/etc/redtether/db-password"   # rather than a password in the URL
//! ca_file = "/etc/redtether/db-ca.pem"            # the database's CA (else the system's)
//! pool_size = 16
//! hub_id = "hub-1"                                # this hub among those sharing it
//! ```

use crate::store::postgres::PgOptions;
use redtether_host::config_file::ConfigError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    url: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    pool_size: Option<usize>,
    hub_id: Option<String>,
}

/// Where the records are.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// sled in the state directory.
    Embedded,
    Postgres(PostgresSettings),
}

#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    pub url: String,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub pool_size: usize,
    /// This hub's id among the hubs sharing the database.
    pub hub_id: String,
}

// The URL may hold a password: never printed whole.
impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSettings::Embedded => f.write_str("Embedded"),
            StoreSettings::Postgres(p) => f
                .debug_struct("Postgres")
                .field("url", &redacted(&p.url))
                .field("ca_file", &p.ca_file)
                .field("pool_size", &p.pool_size)
                .field("hub_id", &p.hub_id)
                .finish_non_exhaustive(),
        }
    }
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => "(not a URL)".to_string(),
    }
}

const MAX_POOL: usize = 256;

pub fn validate(
    raw: RawStore,
    base: &Path,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<StoreSettings, ConfigError> {
    let Some(url) = raw.url else {
        for (set, key) in [
            (raw.password_file.is_some(), "store.password_file"),
            (raw.ca_file.is_some(), "store.ca_file"),
            (raw.pool_size.is_some(), "store.pool_size"),
            (raw.hub_id.is_some(), "store.hub_id"),
        ] {
            if set {
                return Err(invalid(key, "is for a PostgreSQL store: set store.url too".into()));
            }
        }
        return Ok(StoreSettings::Embedded);
    };
    let scheme_ok = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !scheme_ok {
        return Err(invalid("store.url", format!("{} is not a postgres:// URL", redacted(&url))));
    }
    if let Err(e) = tokio_postgres::Config::from_str(&url) {
        return Err(invalid("store.url", format!("{} is not a PostgreSQL connection URL ({e})", redacted(&url))));
    }
    let pool_size = raw.pool_size.unwrap_or(16);
    if !(1..=MAX_POOL).contains(&pool_size) {
        return Err(invalid("store.pool_size", format!("{pool_size} is not from 1 to {MAX_POOL}")));
    }
    let hub_id = match raw.hub_id {
        Some(id) if redtether_proto::names::valid_name(&id) => id,
        Some(id) => return Err(invalid("store.hub_id", format!("{id:?} is not a name (1-64 of A-Z a-z 0-9 . _ @ -)"))),
        None => default_hub_id(),
    };
    Ok(StoreSettings::Postgres(PostgresSettings {
        url,
        password_file: raw.password_file.map(|p| base.join(p)),
        ca_file: raw.ca_file.map(|p| base.join(p)),
        pool_size,
        hub_id,
    }))
}

/// The machine's host name, as far as it is a valid name; `hub` otherwise.
pub fn default_hub_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| redtether_proto::names::valid_name(h))
        .unwrap_or_else(|| "hub".to_string())
}

/// Why the database's password file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("store.password_file {}: {source}", path.display())]
pub struct PasswordFileError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl PostgresSettings {
    /// The store's connection options, with the password read from its file.
    pub fn options(&self) -> Result<PgOptions, PasswordFileError> {
        let mut url = self.url.clone();
        if let Some(path) = &self.password_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| PasswordFileError { path: path.clone(), source })?;
            let password = text.trim_end_matches(['\n', '\r']);
            if let Ok(mut parsed) = url::Url::parse(&url)
                && parsed.set_password(Some(password)).is_ok()
            {
                url = parsed.to_string();
            }
        }
        Ok(PgOptions { url, ca_file: self.ca_file.clone(), pool_size: self.pool_size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str) -> Result<StoreSettings, String> {
        let raw: RawStore =
            redtether_host::config_file::parse_toml(raw, Path::new("hub.toml")).map_err(|e| e.to_string())?;
        validate(raw, Path::new("/etc/redtether"), &|key, msg| ConfigError::invalid("hub.toml", key, msg))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn no_url_is_the_embedded_store_and_postgres_keys_need_one() {
        assert_eq!(check("").unwrap(), StoreSettings::Embedded);
        assert!(check("pool_size = 4").unwrap_err().contains("store.pool_size"));
    }

    #[test]
    fn a_postgres_store_is_checked_key_by_key() {
        let StoreSettings::Postgres(p) =
            check("url = \"postgres://hub@db/rt\"\nca_file = \"ca.pem\"\nhub_id = \"hub-1\"").unwrap()
        else {
            panic!("a URL makes a PostgreSQL store")
        };
        assert_eq!(
            (p.ca_file.unwrap(), p.hub_id.as_str(), p.pool_size),
            (PathBuf::from("/etc/redtether/ca.pem"), "hub-1", 16)
        );
        assert!(check("url = \"mysql://db/rt\"").unwrap_err().contains("store.url"));
        assert!(check("url = \"postgres://hub@db/rt\"\npool_size = 0").unwrap_err().contains("store.pool_size"));
        assert!(check("url = \"postgres://hub@db/rt\"\nhub_id = \"a b\"").unwrap_err().contains("store.hub_id"));
    }

    #[test]
    fn a_password_is_never_shown() {
        let err = check("url = \"mysql://hub:hunter2@db/rt\"").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let settings = check("url = \"postgres://hub:hunter2@db/rt\"").unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn the_password_file_fills_in_the_password() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret/with:chars\n").unwrap();
        let settings = PostgresSettings {
            url: "postgres://hub@db:5432/rt?sslmode=require".into(),
            password_file: Some(dir.path().join("pw")),
            ca_file: None,
            pool_size: 4,
            hub_id: "hub-1".into(),
        };
        let config = tokio_postgres::Config::from_str(&settings.options().unwrap().url).unwrap();
        assert_eq!(config.get_password(), Some(&b"s3cret/with:chars"[..]));
        assert_eq!(config.get_dbname(), Some("rt"));
    }
}
