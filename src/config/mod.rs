//! Configuration: reading the agent's TOML file and validating it into immutable [`Settings`].
//!
//! The file is parsed into raw structs that mirror it exactly (`deny_unknown_fields`, every key
//! optional), then validated into settings with no `Option` left where a default exists. Every
//! error names the file, the dotted key and what is wrong, so the binary can exit with
//! `EX_CONFIG` (78) and a message an operator can act on.

mod gate;
mod raw;
mod settings;

pub use gate::{GateSettings, NodeAuth, RateLimitSettings, Role, UserSettings, valid_user_name};
pub use redtether_host::config_file::{ConfigError, ConfigSource, InvalidKey, ProcessContext};
pub use redtether_host::tls_server::TlsSettings;
pub use settings::{AuditFailurePolicy, AuditSettings, NodeRedLaunch, NodeRedSettings, Settings, TunnelSettings};

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
