use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be used. Every variant names the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` (or the default path) could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but a key is malformed, unknown or out of range.
    #[error("{0}")]
    Invalid(InvalidKey),
}

/// A key that failed parsing or validation, with enough context to find it in the file.
#[derive(Debug)]
pub struct InvalidKey {
    /// The file, or `built-in defaults` when no file was used.
    pub source: String,
    /// The dotted key (`node_red.max_old_space_mb`); empty for a syntax error outside any key.
    pub key: String,
    /// 1-based line of the offending text, when the parser knows it.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration in {}", self.source)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ConfigError {
    pub fn invalid(source: &str, key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid(InvalidKey {
            source: source.to_string(),
            key: key.to_string(),
            line: None,
            message: message.into(),
        })
    }

    /// The dotted key at fault, if the error is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid(k) if !k.key.is_empty() => Some(&k.key),
            _ => None,
        }
    }
}
