//! Configuration: reading the agent's TOML file and validating it into immutable [`Settings`].
//!
//! The file is parsed into raw structs that mirror it exactly (`deny_unknown_fields`, every key
//! optional), then validated into settings with no `Option` left where a default exists. Every
//! error names the file, the dotted key and what is wrong, so the binary can exit with
//! `EX_CONFIG` (78) and a message an operator can act on.

mod gate;
mod hub_address;
mod proxy;
mod raw;
mod settings;

pub use gate::{GateSettings, NodeAuth, RateLimitSettings, Role, UserSettings, valid_user_name};
pub use hub_address::{HubAddress, HubAddressError, parse_list as parse_hub_list};
pub use proxy::{ProxyChoice, ProxyUrl, ProxyUrlError, authority};
pub use redtether_host::config_file::{ConfigError, ConfigSource, InvalidKey, ProcessContext};
pub use redtether_host::tls_server::TlsSettings;
pub use settings::{
    AuditFailurePolicy, AuditSettings, LogsSettings, MetricsSettings, NodeRedLaunch, NodeRedSettings, PolicySettings,
    Settings, TransportChoice, TunnelSettings,
};

use std::path::Path;

/// Where the agent looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/redtether/agent.toml";

/// Loads the settings the way every subcommand does: the explicit `--config` file if given
/// (it must exist), else [`DEFAULT_CONFIG_PATH`] if it exists, else the built-in defaults.
pub fn load(explicit: Option<&Path>, ctx: &ProcessContext) -> Result<Settings, ConfigError> {
    match redtether_host::config_file::read(explicit, Path::new(DEFAULT_CONFIG_PATH), ctx)? {
        Some((path, text)) => from_toml(&text, &path, ctx),
        None => settings::validate(raw::RawConfig::default(), ConfigSource::Defaults, ctx),
    }
}

/// Parses and validates configuration text that came from `path`.
pub fn from_toml(text: &str, path: &Path, ctx: &ProcessContext) -> Result<Settings, ConfigError> {
    let raw = raw::parse(text, path)?;
    settings::validate(raw, ConfigSource::File(path.to_path_buf()), ctx)
}

/// Where the state directory is when the configuration does not validate: the file's own
/// `state_dir` if that key can be read at all, else the default. For `redtether reload`, which
/// must still reach the running daemon to have it report the broken file.
pub fn state_dir_hint(explicit: Option<&Path>, ctx: &ProcessContext) -> std::path::PathBuf {
    #[derive(serde::Deserialize)]
    struct Hint {
        state_dir: Option<std::path::PathBuf>,
    }
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
    let hinted = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| redtether_host::config_file::parse_toml::<Hint>(&text, path).ok())
        .and_then(|hint| hint.state_dir)
        .filter(|dir| !dir.as_os_str().is_empty());
    match hinted {
        Some(dir) if dir.is_relative() => path.parent().unwrap_or(Path::new("/")).join(dir),
        Some(dir) => dir,
        None => ctx.default_state_dir("redtether"),
    }
}
