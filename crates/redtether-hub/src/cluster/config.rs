//! `[cluster]` in hub.toml: this hub is one of several sharing a PostgreSQL store.
//!
//! ```toml
//! [store]
//! url = "postgres://hub@db.internal/redtether?sslmode=require"
//! hub_id = "hub-a"                      # unique among the hubs
//!
//! [cluster]
//! listen = "10.0.0.5:7444"              # where the other hubs forward requests (mutual TLS)
//! advertise = "hub-a.internal:7444"     # how they reach it [default: listen]
//! key_file = "/etc/redtether/cluster.key"  # the key-encryption key, the same on every hub
//! ```

use crate::store_settings::StoreSettings;
use redtether_host::config_file::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    listen: Option<String>,
    advertise: Option<String>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This hub's id (`[store] hub_id`).
    pub hub_id: String,
    pub listen: SocketAddr,
    /// `HOST:PORT` the other hubs dial; `None`: the bound listen address.
    pub advertise: Option<String>,
    /// 32 bytes, hex: encrypts the keys the hubs share in the database.
    pub key_file: PathBuf,
}

pub fn validate(
    raw: Option<RawCluster>,
    store: &StoreSettings,
    base: &Path,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Option<ClusterSettings>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let StoreSettings::Postgres(pg) = store else {
        return Err(invalid(
            "cluster",
            "several hubs share a PostgreSQL store: set [store] url (the embedded store is one hub's)".into(),
        ));
    };
    let listen = raw.listen.ok_or_else(|| invalid("cluster.listen", "is required".into()))?;
    let listen: SocketAddr =
        listen.parse().map_err(|e| invalid("cluster.listen", format!("{listen:?} is not an address:port ({e})")))?;
    let advertise = match raw.advertise {
        Some(a) if a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) => Some(a),
        Some(a) => return Err(invalid("cluster.advertise", format!("{a:?} is not HOST:PORT"))),
        None if listen.ip().is_unspecified() => {
            return Err(invalid(
                "cluster.advertise",
                format!("is required when cluster.listen ({listen}) is a wildcard: the other hubs need an address"),
            ));
        }
        None => None,
    };
    let key_file = base.join(raw.key_file.ok_or_else(|| invalid("cluster.key_file", "is required".into()))?);
    Ok(Some(ClusterSettings { hub_id: pg.hub_id.clone(), listen, advertise, key_file }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_settings::PostgresSettings;

    fn check(raw: &str, store: &StoreSettings) -> Result<Option<ClusterSettings>, String> {
        let raw: RawCluster =
            redtether_host::config_file::parse_toml(raw, Path::new("hub.toml")).map_err(|e| e.to_string())?;
        validate(Some(raw), store, Path::new("/etc/redtether"), &|key, msg| ConfigError::invalid("hub.toml", key, msg))
            .map_err(|e| e.to_string())
    }

    fn postgres() -> StoreSettings {
        StoreSettings::Postgres(PostgresSettings {
            url: "postgres://hub@db/rt".into(),
            password_file: None,
            ca_file: None,
            pool_size: 4,
            hub_id: "hub-a".into(),
        })
    }

    #[test]
    fn a_cluster_needs_postgres_and_its_keys() {
        let err = check("listen = \"127.0.0.1:7444\"\nkey_file = \"k\"", &StoreSettings::Embedded).unwrap_err();
        assert!(err.contains("cluster") && err.contains("store"), "{err}");
        let ok = check("listen = \"127.0.0.1:7444\"\nkey_file = \"k\"", &postgres()).unwrap().unwrap();
        assert_eq!((ok.hub_id.as_str(), ok.key_file), ("hub-a", PathBuf::from("/etc/redtether/k")));
        assert!(check("listen = \"127.0.0.1:7444\"", &postgres()).unwrap_err().contains("cluster.key_file"));
        assert!(check("key_file = \"k\"", &postgres()).unwrap_err().contains("cluster.listen"));
        let wildcard = check("listen = \"0.0.0.0:7444\"\nkey_file = \"k\"", &postgres()).unwrap_err();
        assert!(wildcard.contains("cluster.advertise"), "{wildcard}");
        assert!(check("listen = \"0.0.0.0:7444\"\nkey_file = \"k\"\nadvertise = \"hub-a\"", &postgres()).is_err());
    }
}
