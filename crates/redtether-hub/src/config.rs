//! The hub's configuration file (`hub.toml`), validated like the agent's: unknown keys refused,
//! every error naming the file and the key.

use redtether_host::config_file::{ConfigError, ConfigSource, ProcessContext, parse_toml};
use redtether_host::tls_server::TlsSettings;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHub {
    state_dir: Option<PathBuf>,
    log_level: Option<String>,
    listen: Option<String>,
    api_listen: Option<String>,
    allow_plaintext_api: Option<bool>,
    names: Option<Vec<String>>,
    #[serde(default, deserialize_with = "redtether_host::config_file::duration::deserialize_opt")]
    device_cert_lifetime: Option<Duration>,
    #[serde(default, deserialize_with = "redtether_host::config_file::duration::deserialize_opt")]
    enroll_token_lifetime: Option<Duration>,
    first_owner: Option<String>,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    alerts: crate::alerts::config::RawAlerts,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    tcp: RawTcp,
    #[serde(default)]
    store: crate::store_settings::RawStore,
    cluster: Option<crate::cluster::config::RawCluster>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    require_2fa: Option<bool>,
    #[serde(default, deserialize_with = "redtether_host::config_file::duration::deserialize_opt")]
    session_idle: Option<Duration>,
    #[serde(default, deserialize_with = "redtether_host::config_file::duration::deserialize_opt")]
    session_max: Option<Duration>,
    #[serde(default, deserialize_with = "redtether_host::config_file::duration::deserialize_opt")]
    setup_code_lifetime: Option<Duration>,
    oidc: Option<crate::sso::config::RawOidc>,
    ldap: Option<crate::sso::config::RawLdap>,
}

/// `[auth]`: how operators log in.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Local accounts need TOTP (or a recovery code) after their password.
    pub require_2fa: bool,
    pub session: crate::identity::session::Lifetime,
    /// How long a setup code from `operator add` / `reset-2fa` may be used.
    pub setup_code_lifetime: Duration,
    /// `[auth.oidc]`: single sign-on with an OpenID provider.
    pub oidc: Option<crate::sso::config::OidcSettings>,
    /// `[auth.ldap]`: passwords checked by a directory, roles from its groups.
    pub ldap: Option<crate::sso::config::LdapSettings>,
}

impl AuthSettings {
    /// Whether local accounts may log in with their password (`[auth.oidc] password_login`).
    pub fn password_login(&self) -> bool {
        self.oidc.as_ref().is_none_or(|o| o.password_login)
    }
}

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            require_2fa: true,
            session: crate::identity::session::Lifetime { idle: 30 * 60, max: 12 * 3600 },
            setup_code_lifetime: Duration::from_secs(24 * 3600),
            oidc: None,
            ldap: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    tls: Option<RawApiTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    self_signed: Option<bool>,
}

/// Validated hub settings.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub source: ConfigSource,
    pub state_dir: PathBuf,
    pub log_level: String,
    /// QUIC (UDP): tunnels and enrollment.
    pub listen: SocketAddr,
    /// The operator HTTP API.
    pub api_listen: SocketAddr,
    pub api_tls: Option<TlsSettings>,
    /// Names and addresses devices reach the hub by: its certificate is valid for these.
    pub names: Vec<String>,
    pub device_cert_lifetime: Duration,
    pub enroll_token_lifetime: Duration,
    /// The owner account made, with its setup link printed, on a start that finds no operator
    /// at all; `None`: no account is made (`operator add` is the way).
    pub first_owner: Option<String>,
    pub auth: AuthSettings,
    /// `[metrics] listen`: an address serving only `GET /metrics`, without a login (for a
    /// scraper); `None` (the default): metrics only on the operator listener, for operators.
    pub metrics_listen: Option<SocketAddr>,
    /// `[tcp] listen`: tunnels and enrollment over TLS over TCP, for devices whose network
    /// lets no UDP through; `None` (the default): QUIC only.
    pub tcp_listen: Option<SocketAddr>,
    /// `[alerts]` and `[[alerts.webhook]]`.
    pub alerts: crate::alerts::config::AlertSettings,
    /// `[store]`: the embedded store (the default) or PostgreSQL.
    pub store: crate::store_settings::StoreSettings,
    /// `[cluster]`: one of several hubs sharing the PostgreSQL store.
    pub cluster: Option<crate::cluster::config::ClusterSettings>,
}

/// The first owner's name on a hub run with the built-in defaults.
pub const DEFAULT_FIRST_OWNER: &str = "admin";

pub const DEFAULT_HUB_CONFIG: &str = "/etc/redtether/hub.toml";

/// Names the hub's certificate always covers, before those `names` adds.
const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl HubSettings {
    /// The `HOST:PORT` a device gives `redtether enroll --hub` for a hub listening on `listen`:
    /// the first name hub.toml adds (the hub's certificate covers it and it is how other
    /// machines know the hub), else the listen address, with loopback for a wildcard.
    pub fn device_address(&self, listen: SocketAddr) -> String {
        match self.names.iter().find(|n| !LOCAL_NAMES.contains(&n.as_str())) {
            Some(name) if name.contains(':') => format!("[{name}]:{}", listen.port()),
            Some(name) => format!("{name}:{}", listen.port()),
            None if listen.ip().is_unspecified() => {
                let ip: std::net::IpAddr = if listen.is_ipv6() {
                    std::net::Ipv6Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv4Addr::LOCALHOST.into()
                };
                SocketAddr::new(ip, listen.port()).to_string()
            }
            None => listen.to_string(),
        }
    }
}

/// `--config` if given (it must exist), else the default path if it exists, else defaults.
pub fn load(explicit: Option<&Path>, ctx: &ProcessContext) -> Result<HubSettings, ConfigError> {
    let path = match explicit {
        Some(p) => ctx.cwd.join(p),
        None if Path::new(DEFAULT_HUB_CONFIG).exists() => PathBuf::from(DEFAULT_HUB_CONFIG),
        None => return validate(RawHub::default(), ConfigSource::Defaults, ctx),
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
    validate(parse_toml(&text, &path)?, ConfigSource::File(path), ctx)
}

fn validate(raw: RawHub, source: ConfigSource, ctx: &ProcessContext) -> Result<HubSettings, ConfigError> {
    let src = source.describe();
    let invalid = |key: &str, msg: String| ConfigError::invalid(&src, key, msg);
    let base = source.base_dir(ctx);
    let state_dir = match raw.state_dir {
        Some(p) if p.as_os_str().is_empty() => return Err(invalid("state_dir", "must not be empty".into())),
        Some(p) => base.join(p),
        // The same rule as the agent's: systemd's StateDirectory, /var/lib as root, else a
        // folder in the working directory (so a first try leaves nothing elsewhere).
        None => ctx.default_state_dir("redtether-hub"),
    };
    let addr = |value: Option<String>, default: &str, key: &str| -> Result<SocketAddr, ConfigError> {
        let text = value.unwrap_or_else(|| default.to_string());
        text.parse().map_err(|e| invalid(key, format!("{text:?} is not an address:port ({e})")))
    };
    let listen = addr(raw.listen, "0.0.0.0:7443", "listen")?;
    let api_listen = addr(raw.api_listen, "127.0.0.1:8443", "api_listen")?;
    let log_level = raw.log_level.unwrap_or_else(|| "info".into());
    if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
        return Err(invalid("log_level", format!("{log_level:?} is not one of error, warn, info, debug, trace")));
    }
    let mut names: Vec<String> = LOCAL_NAMES.iter().map(|n| n.to_string()).collect();
    for name in raw.names.unwrap_or_default() {
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
        if !ok {
            return Err(invalid("names", format!("{name:?} is not a DNS name or an IP address")));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let positive = |d: Option<Duration>, default: Duration, key: &str| match d.unwrap_or(default) {
        d if d.is_zero() => Err(invalid(key, "must be greater than zero".into())),
        d => Ok(d),
    };
    let api_tls = match raw.api.tls {
        None => None,
        Some(t) => match (t.cert, t.key, t.self_signed.unwrap_or(false)) {
            (Some(c), Some(k), false) => Some(TlsSettings::Files { cert: base.join(c), key: base.join(k) }),
            (None, None, true) => Some(TlsSettings::SelfSigned),
            (None, None, false) => None,
            _ => return Err(invalid("api.tls", "give either cert and key, or self_signed = true".into())),
        },
    };
    // Operator tokens and login cookies in clear text are only acceptable on loopback: off the
    // machine they are one packet capture away from owning the fleet.
    if api_tls.is_none() && !api_listen.ip().is_loopback() && !raw.allow_plaintext_api.unwrap_or(false) {
        return Err(invalid(
            "api_listen",
            format!(
                "{api_listen} is reachable from other machines but the API has no TLS: add [api.tls] \
                 (cert and key, or self_signed = true), or set allow_plaintext_api = true behind a \
                 TLS-terminating proxy"
            ),
        ));
    }
    // A hub started with no file at all is someone trying it out: it makes the first owner so
    // the printed link is all they need. A hub.toml is a deliberate setup, where operators are
    // added with `operator add` unless the file asks for a first owner.
    let first_owner = match raw.first_owner {
        Some(name) if !redtether_proto::names::valid_name(&name) => {
            return Err(invalid(
                "first_owner",
                format!("{name:?} is not an operator name (1-64 of A-Z a-z 0-9 . _ @ -)"),
            ));
        }
        Some(name) => Some(name),
        None if source == ConfigSource::Defaults => Some(DEFAULT_FIRST_OWNER.to_string()),
        None => None,
    };
    let metrics_listen = match raw.metrics.listen {
        None => None,
        Some(text) => Some(addr(Some(text), "", "metrics.listen")?),
    };
    if metrics_listen.is_some_and(|m| m.port() != 0 && (m.port() == api_listen.port() || m.port() == listen.port())) {
        return Err(invalid("metrics.listen", "must not share a port with listen or api_listen".into()));
    }
    let tcp_listen = match raw.tcp.listen {
        None => None,
        Some(text) => Some(addr(Some(text), "", "tcp.listen")?),
    };
    if tcp_listen.is_some_and(|t| t.port() != 0 && t.port() == api_listen.port() && t.ip() == api_listen.ip()) {
        return Err(invalid("tcp.listen", "must not be api_listen's address".into()));
    }
    let store = crate::store_settings::validate(raw.store, &base, &invalid)?;
    Ok(HubSettings {
        source,
        metrics_listen,
        tcp_listen,
        state_dir,
        log_level,
        listen,
        api_listen,
        api_tls,
        names,
        device_cert_lifetime: positive(
            raw.device_cert_lifetime,
            Duration::from_secs(90 * 86400),
            "device_cert_lifetime",
        )?,
        enroll_token_lifetime: positive(raw.enroll_token_lifetime, Duration::from_secs(3600), "enroll_token_lifetime")?,
        first_owner,
        auth: auth(raw.auth, &base, &invalid, &positive)?,
        alerts: crate::alerts::config::validate(raw.alerts, &base, &invalid)?,
        cluster: crate::cluster::config::validate(raw.cluster, &store, &base, &invalid)?,
        store,
    })
}

/// Checks a duration key: the value or its default, refused if zero.
type Positive<'a> = &'a dyn Fn(Option<Duration>, Duration, &str) -> Result<Duration, ConfigError>;

fn auth(
    raw: RawAuth,
    base: &Path,
    invalid: &dyn Fn(&str, String) -> ConfigError,
    positive: Positive<'_>,
) -> Result<AuthSettings, ConfigError> {
    let default = AuthSettings::default();
    let idle = positive(raw.session_idle, Duration::from_secs(default.session.idle), "auth.session_idle")?;
    let max = positive(raw.session_max, Duration::from_secs(default.session.max), "auth.session_max")?;
    Ok(AuthSettings {
        require_2fa: raw.require_2fa.unwrap_or(default.require_2fa),
        session: crate::identity::session::Lifetime { idle: idle.as_secs().max(1), max: max.as_secs().max(1) },
        setup_code_lifetime: positive(
            raw.setup_code_lifetime,
            default.setup_code_lifetime,
            "auth.setup_code_lifetime",
        )?,
        oidc: raw.oidc.map(|o| crate::sso::config::validate_oidc(o, base, invalid)).transpose()?,
        ldap: raw.ldap.map(|l| crate::sso::config::validate_ldap(l, base, invalid)).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ProcessContext {
        ProcessContext { is_root: false, state_directory: None, cwd: PathBuf::from("/srv") }
    }

    fn load_text(text: &str) -> Result<HubSettings, ConfigError> {
        validate(
            parse_toml(text, Path::new("/etc/redtether/hub.toml"))?,
            ConfigSource::File("/etc/redtether/hub.toml".into()),
            &ctx(),
        )
    }

    #[test]
    fn defaults() {
        let s = load_text("").unwrap();
        assert_eq!(s.listen, "0.0.0.0:7443".parse().unwrap());
        assert_eq!(s.api_listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(s.device_cert_lifetime, Duration::from_secs(90 * 86400));
        assert!(s.names.contains(&"localhost".to_string()));
        assert!(s.api_tls.is_none());
        assert!(s.auth.require_2fa, "2FA is on unless turned off");
        assert_eq!((s.auth.session.idle, s.auth.session.max), (1800, 43200));
        let s = load_text("[auth]\nrequire_2fa = false\nsession_idle = \"5m\"\nsession_max = \"1h\"\n").unwrap();
        assert!(!s.auth.require_2fa);
        assert_eq!((s.auth.session.idle, s.auth.session.max), (300, 3600));
    }

    #[test]
    fn built_in_defaults_keep_state_here_and_make_a_first_owner() {
        let s = validate(RawHub::default(), ConfigSource::Defaults, &ctx()).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/srv/redtether-hub-state"), "not root: the working directory");
        assert_eq!(s.api_listen, "127.0.0.1:8443".parse().unwrap(), "plain HTTP, so loopback only");
        assert_eq!(s.first_owner.as_deref(), Some("admin"));
        let root = ProcessContext { is_root: true, ..ctx() };
        let s = validate(RawHub::default(), ConfigSource::Defaults, &root).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/redtether-hub"));
        let systemd = ProcessContext { state_directory: Some("/var/lib/redtether-hub".into()), ..ctx() };
        let s = validate(RawHub::default(), ConfigSource::Defaults, &systemd).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/redtether-hub"));
    }

    #[test]
    fn a_config_file_makes_a_first_owner_only_when_it_names_one() {
        assert_eq!(load_text("").unwrap().first_owner, None);
        assert_eq!(load_text("first_owner = \"root-op\"\n").unwrap().first_owner.as_deref(), Some("root-op"));
    }

    #[test]
    fn devices_are_told_the_first_added_name_else_the_listen_address() {
        let wildcard: SocketAddr = "0.0.0.0:7443".parse().unwrap();
        assert_eq!(load_text("").unwrap().device_address(wildcard), "127.0.0.1:7443");
        assert_eq!(load_text("").unwrap().device_address("[::]:7443".parse().unwrap()), "[::1]:7443");
        assert_eq!(load_text("").unwrap().device_address("10.0.0.5:7000".parse().unwrap()), "10.0.0.5:7000");
        let named = load_text("names = [\"hub.plant.example\", \"10.0.0.5\"]\n").unwrap();
        assert_eq!(named.device_address(wildcard), "hub.plant.example:7443");
        assert_eq!(load_text("names = [\"fd00::5\"]\n").unwrap().device_address(wildcard), "[fd00::5]:7443");
    }

    #[test]
    fn errors_name_their_key() {
        let key = |t: &str| load_text(t).unwrap_err().key().unwrap().to_string();
        assert_eq!(key("listen = \"nowhere\"\n"), "listen");
        assert_eq!(key("names = [\"bad name\"]\n"), "names");
        assert_eq!(key("device_cert_lifetime = \"0s\"\n"), "device_cert_lifetime");
        assert_eq!(key("first_owner = \"ann smith\"\n"), "first_owner");
        assert_eq!(key("colour = 1\n"), "colour");
        assert_eq!(key("[api.tls]\ncert = \"c\"\n"), "api.tls");
        assert_eq!(key("[auth]\nsession_idle = \"0s\"\n"), "auth.session_idle");
        assert_eq!(key("[auth]\nsession_max = \"soon\"\n"), "auth.session_max");
        assert_eq!(key("[auth]\nrequire_2fa = \"yes\"\n"), "auth.require_2fa");
        assert_eq!(key("[auth.oidc]\nclient_id = \"hub\"\n"), "auth.oidc.issuer");
        assert_eq!(key("[auth.ldap]\nurl = \"ldap://ldap.example.com\"\nbind_dn = \"uid={user}\"\n"), "auth.ldap.url");
    }

    #[test]
    fn a_plaintext_api_off_loopback_is_refused_unless_asked_for() {
        let err = load_text("api_listen = \"0.0.0.0:8443\"\n").unwrap_err();
        assert_eq!(err.key(), Some("api_listen"));
        assert!(err.to_string().contains("[api.tls]"), "{err}");
        assert!(load_text("api_listen = \"[::]:8443\"\n").is_err());
        assert!(load_text("api_listen = \"0.0.0.0:8443\"\nallow_plaintext_api = true\n").is_ok());
        assert!(load_text("api_listen = \"0.0.0.0:8443\"\n[api.tls]\nself_signed = true\n").is_ok());
        assert!(load_text("api_listen = \"[::1]:8443\"\n").is_ok(), "loopback needs no TLS");
    }
}
