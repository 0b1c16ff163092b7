//! Validation of the `[gate]` table: listening address, node-space auth, users and roles,
//! protection mode, rate limits and TLS.

use super::raw::RawGate;
use super::{ConfigError, TlsSettings};
use redtether_proto::policy::{check_phc, normalize_origin};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// What a configured user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and writes the admin API and manages tokens.
    Owner,
    /// Reads and writes the admin API.
    Member,
    /// Reads the admin API and the editor, never writes.
    Viewer,
    /// Node space only (dashboards, HTTP-In).
    Dashboard,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "owner" => Some(Role::Owner),
            "member" => Some(Role::Member),
            "viewer" => Some(Role::Viewer),
            "dashboard" => Some(Role::Dashboard),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
            Role::Viewer => "viewer",
            Role::Dashboard => "dashboard",
        }
    }
}

/// How node space (HTTP-In, dashboards, static files) is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAuth {
    /// Open: the gate does not authenticate node space (flows may).
    None,
    /// One username and password.
    Basic { user: String, password_hash: String },
    /// Any configured user, an editor session, or a bearer token.
    Users,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSettings {
    pub name: String,
    pub password_hash: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSettings {
    /// Per source address; 0 turns the request limit off.
    pub requests_per_second: f64,
    pub burst: u32,
    /// Requests in flight to Node-RED at once; more get 503.
    pub max_upstream_connections: u32,
    /// Failed authentications per source address (always on).
    pub failed_auth_burst: u32,
    pub failed_auth_per_second: f64,
}

#[derive(Debug, Clone)]
pub struct GateSettings {
    pub listen: SocketAddr,
    pub protection: bool,
    pub session_ttl: Duration,
    /// Origins (`scheme://host[:port]`, lower case) allowed cross-origin access; never `*`.
    pub cors_origins: Vec<String>,
    pub http_auth: NodeAuth,
    pub users: Vec<UserSettings>,
    pub rate_limit: RateLimitSettings,
    pub tls: Option<TlsSettings>,
}

pub(super) fn validate(
    raw: RawGate,
    base_dir: &Path,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<GateSettings, ConfigError> {
    let listen_text = raw.listen.unwrap_or_else(|| "0.0.0.0:1880".into());
    let listen = listen_text.parse::<SocketAddr>().map_err(|e| {
        invalid("gate.listen", format!("{listen_text:?} is not an address:port such as \"0.0.0.0:1880\" ({e})"))
    })?;

    let http_auth = match raw.http_auth.mode.as_deref().unwrap_or("users") {
        "none" => NodeAuth::None,
        "users" => NodeAuth::Users,
        "basic" => {
            let user = raw
                .http_auth
                .user
                .filter(|u| !u.is_empty())
                .ok_or_else(|| invalid("gate.http_auth.user", "is required when mode = \"basic\"".into()))?;
            if user.contains(':') || user.chars().any(char::is_control) {
                return Err(invalid("gate.http_auth.user", "must not contain ':' or control characters".into()));
            }
            let hash = raw.http_auth.password_hash.ok_or_else(|| {
                invalid(
                    "gate.http_auth.password_hash",
                    "is required when mode = \"basic\" (make one with `redtether passwd`)".into(),
                )
            })?;
            check_phc(&hash).map_err(|e| invalid("gate.http_auth.password_hash", e.to_string()))?;
            NodeAuth::Basic { user, password_hash: hash }
        }
        other => {
            return Err(invalid("gate.http_auth.mode", format!("{other:?} is not one of none, basic, users")));
        }
    };

    let mut users: Vec<UserSettings> = Vec::new();
    for (i, u) in raw.users.unwrap_or_default().into_iter().enumerate() {
        let key = |field: &str| format!("gate.users[{i}].{field}");
        if !valid_user_name(&u.name) {
            return Err(invalid(
                &key("name"),
                format!("{:?} is not a user name (1-64 of A-Z a-z 0-9 . _ @ -)", u.name),
            ));
        }
        if users.iter().any(|other| other.name == u.name) {
            return Err(invalid(&key("name"), format!("user {:?} is configured twice", u.name)));
        }
        check_phc(&u.password_hash).map_err(|e| invalid(&key("password_hash"), e.to_string()))?;
        let role = Role::parse(&u.role).ok_or_else(|| {
            invalid(&key("role"), format!("{:?} is not one of owner, member, viewer, dashboard", u.role))
        })?;
        users.push(UserSettings { name: u.name, password_hash: u.password_hash, role });
    }

    let mut cors_origins = Vec::new();
    for origin in raw.cors_origins.unwrap_or_default() {
        let normalized = normalize_origin(&origin).ok_or_else(|| {
            invalid(
                "gate.cors_origins",
                format!("{origin:?} is not an origin such as \"https://hmi.example:8443\" (no wildcards)"),
            )
        })?;
        cors_origins.push(normalized);
    }

    let r = raw.rate_limit;
    let requests_per_second = r.requests_per_second.unwrap_or(0.0);
    if !(requests_per_second >= 0.0 && requests_per_second.is_finite()) {
        return Err(invalid("gate.rate_limit.requests_per_second", "must be 0 (off) or a positive number".into()));
    }
    let failed_auth_per_second = r.failed_auth_per_second.unwrap_or(1.0);
    if !(failed_auth_per_second > 0.0 && failed_auth_per_second.is_finite()) {
        return Err(invalid("gate.rate_limit.failed_auth_per_second", "must be a positive number".into()));
    }
    let burst_default = (requests_per_second * 2.0).ceil().max(1.0) as u32;
    let rate_limit = RateLimitSettings {
        requests_per_second,
        burst: positive_u32(r.burst, burst_default, "gate.rate_limit.burst", invalid)?,
        max_upstream_connections: positive_u32(
            r.max_upstream_connections,
            256,
            "gate.rate_limit.max_upstream_connections",
            invalid,
        )?,
        failed_auth_burst: positive_u32(r.failed_auth_burst, 10, "gate.rate_limit.failed_auth_burst", invalid)?,
        failed_auth_per_second,
    };

    let tls = match raw.tls {
        None => None,
        Some(t) => match (t.cert, t.key, t.self_signed.unwrap_or(false)) {
            (Some(cert), Some(key), false) => {
                Some(TlsSettings::Files { cert: base_dir.join(cert), key: base_dir.join(key) })
            }
            (None, None, true) => Some(TlsSettings::SelfSigned),
            (None, None, false) => None,
            (_, _, true) => {
                return Err(invalid("gate.tls.self_signed", "cannot be combined with cert and key".into()));
            }
            (Some(_), None, _) => {
                return Err(invalid("gate.tls.key", "is required with gate.tls.cert".into()));
            }
            (None, Some(_), _) => {
                return Err(invalid("gate.tls.cert", "is required with gate.tls.key".into()));
            }
        },
    };

    let session_ttl = raw.session_ttl.unwrap_or(Duration::from_secs(12 * 3600));
    if session_ttl.is_zero() {
        return Err(invalid("gate.session_ttl", "must be greater than zero".into()));
    }

    Ok(GateSettings {
        listen,
        protection: raw.protection.unwrap_or(false),
        session_ttl,
        cors_origins,
        http_auth,
        users,
        rate_limit,
        tls,
    })
}

fn positive_u32(
    value: Option<u32>,
    default: u32,
    key: &str,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<u32, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(invalid(key, "must be at least 1".into())),
        n => Ok(n),
    }
}

pub use redtether_proto::names::valid_name as valid_user_name;

#[cfg(test)]
mod tests {
    use crate::config::{NodeAuth, ProcessContext, Role, TlsSettings, from_toml};
    use std::path::{Path, PathBuf};

    fn load(text: &str) -> Result<super::GateSettings, crate::config::ConfigError> {
        let ctx = ProcessContext { is_root: false, state_directory: None, cwd: PathBuf::from("/") };
        from_toml(text, Path::new("/etc/redtether/agent.toml"), &ctx).map(|s| s.gate)
    }

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$KjR7n9y0DC0T8hK1IuvWz9P2qgT8Lw0nJa6W5mR1aF8";

    #[test]
    fn defaults_deny_by_default() {
        let g = load("").unwrap();
        assert_eq!(g.http_auth, NodeAuth::Users, "node space needs credentials unless opened");
        assert!(!g.protection);
        assert!(g.users.is_empty());
        assert_eq!(g.rate_limit.failed_auth_burst, 10);
        assert_eq!(g.rate_limit.failed_auth_per_second, 1.0);
        assert_eq!(g.rate_limit.requests_per_second, 0.0, "request limit off by default");
        assert!(g.tls.is_none());
    }

    #[test]
    fn users_and_basic_mode_parse() {
        let g = load(&format!(
            "[gate.http_auth]\nmode = \"basic\"\nuser = \"hmi\"\npassword_hash = \"{HASH}\"\n[[gate.users]]\nname = \"ann\"\npassword_hash = \"{HASH}\"\nrole = \"viewer\"\n"
        ))
        .unwrap();
        assert!(matches!(g.http_auth, NodeAuth::Basic { ref user, .. } if user == "hmi"));
        assert_eq!(g.users[0].role, Role::Viewer);
    }

    #[test]
    fn bad_gate_values_name_their_key() {
        let key = |text: &str| load(text).unwrap_err().key().unwrap().to_string();
        assert_eq!(key("[gate.http_auth]\nmode = \"open\"\n"), "gate.http_auth.mode");
        assert_eq!(key("[gate.http_auth]\nmode = \"basic\"\n"), "gate.http_auth.user");
        assert_eq!(key("[gate.http_auth]\nmode = \"basic\"\nuser = \"u\"\n"), "gate.http_auth.password_hash");
        assert_eq!(
            key("[gate.http_auth]\nmode = \"basic\"\nuser = \"u\"\npassword_hash = \"plain\"\n"),
            "gate.http_auth.password_hash"
        );
        assert_eq!(
            key(&format!("[[gate.users]]\nname = \"a b\"\npassword_hash = \"{HASH}\"\nrole = \"owner\"\n")),
            "gate.users[0].name"
        );
        assert_eq!(
            key(&format!("[[gate.users]]\nname = \"a\"\npassword_hash = \"{HASH}\"\nrole = \"admin\"\n")),
            "gate.users[0].role"
        );
        assert_eq!(
            key("[[gate.users]]\nname = \"a\"\npassword_hash = \"$1$md5$x\"\nrole = \"owner\"\n"),
            "gate.users[0].password_hash"
        );
        assert_eq!(
            key(&format!(
                "[[gate.users]]\nname = \"a\"\npassword_hash = \"{HASH}\"\nrole = \"owner\"\n[[gate.users]]\nname = \"a\"\npassword_hash = \"{HASH}\"\nrole = \"owner\"\n"
            )),
            "gate.users[1].name"
        );
        assert_eq!(key("[gate]\ncors_origins = [\"*\"]\n"), "gate.cors_origins");
        assert_eq!(key("[gate.rate_limit]\nrequests_per_second = -1.0\n"), "gate.rate_limit.requests_per_second");
        assert_eq!(
            key("[gate.rate_limit]\nmax_upstream_connections = 0\n"),
            "gate.rate_limit.max_upstream_connections"
        );
        assert_eq!(key("[gate.tls]\ncert = \"c.pem\"\n"), "gate.tls.key");
        assert_eq!(key("[gate.tls]\nself_signed = true\ncert = \"c.pem\"\nkey = \"k.pem\"\n"), "gate.tls.self_signed");
    }

    #[test]
    fn tls_paths_are_relative_to_the_file() {
        let g = load("[gate.tls]\ncert = \"tls/c.pem\"\nkey = \"tls/k.pem\"\n").unwrap();
        assert_eq!(
            g.tls,
            Some(TlsSettings::Files {
                cert: "/etc/redtether/tls/c.pem".into(),
                key: "/etc/redtether/tls/k.pem".into()
            })
        );
    }
}
