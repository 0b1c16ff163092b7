//! Configuration files as both daemons read them: TOML, every key optional, unknown keys
//! refused, and every error naming the file, the line and the dotted key, so the binary can exit
//! with `EX_CONFIG` (78) and a message an operator can act on. Also the process facts that
//! choose defaults, and durations written as `"10s"`.

pub mod duration;
mod error;
mod process;

pub use error::{ConfigError, InvalidKey};
pub use process::ProcessContext;

use std::path::{Path, PathBuf};

/// Where the settings came from, for messages and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Defaults,
}

impl ConfigSource {
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Defaults => "built-in defaults".to_string(),
        }
    }

    /// The folder relative paths in the settings are relative to: the file's, or the working
    /// directory for the built-in defaults.
    pub fn base_dir(&self, ctx: &ProcessContext) -> PathBuf {
        match self {
            ConfigSource::File(f) => f.parent().unwrap_or(Path::new("/")).to_path_buf(),
            ConfigSource::Defaults => ctx.cwd.clone(),
        }
    }
}

/// The configuration text to use: the explicit `--config` file if given (it must exist), else
/// `default_path` if it exists, else none (the built-in defaults apply).
pub fn read(
    explicit: Option<&Path>,
    default_path: &Path,
    ctx: &ProcessContext,
) -> Result<Option<(PathBuf, String)>, ConfigError> {
    let path = match explicit {
        // Absolute, so messages and `status` name the file unambiguously.
        Some(path) => ctx.cwd.join(path),
        None if default_path.exists() => default_path.to_path_buf(),
        None => return Ok(None),
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
    Ok(Some((path, text)))
}

/// Parses any configuration file's TOML into `T`, with errors that name the key and line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    let source = path.display().to_string();
    let deserializer = toml::de::Deserializer::parse(text).map_err(|e| toml_error(&source, text, "", &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = dotted_key(e.path());
        toml_error(&source, text, &key, &e.into_inner())
    })
}

fn toml_error(source: &str, text: &str, key: &str, err: &toml::de::Error) -> ConfigError {
    let line = err.span().map(|span| line_of(text, span.start));
    ConfigError::Invalid(InvalidKey {
        source: source.to_string(),
        key: key.to_string(),
        line,
        message: err.message().trim().to_string(),
    })
}

fn dotted_key(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." { String::new() } else { text }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |before| before.matches('\n').count()) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        listen: Option<String>,
        #[serde(default)]
        inner: Inner,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default, deserialize_with = "duration::deserialize_opt")]
        every: Option<std::time::Duration>,
    }

    fn err(text: &str) -> (String, Option<usize>, String) {
        match parse_toml::<Sample>(text, Path::new("/etc/x.toml")).unwrap_err() {
            ConfigError::Invalid(k) => (k.key, k.line, k.message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_dotted_key_and_the_line() {
        assert_eq!(err("listen = 3\n").0, "listen");
        let (key, line, message) = err("listen = \"x\"\n[inner]\nevery = \"often\"\n");
        assert_eq!((key.as_str(), line), ("inner.every", Some(3)));
        assert!(message.contains("often"), "{message}");
        let (key, _, message) = err("[inner]\nnope = 1\n");
        assert_eq!(key, "inner.nope");
        assert!(message.contains("unknown field"), "{message}");
        assert_eq!(err("[inner\n").1, Some(1));
        let ok: Sample = parse_toml("[inner]\nevery = \"1m 30s\"\n", Path::new("x")).unwrap();
        assert_eq!(ok.inner.every, Some(std::time::Duration::from_secs(90)));
        assert!(ok.listen.is_none());
    }

    #[test]
    fn an_explicit_file_must_exist_a_default_one_may_not() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ProcessContext { is_root: false, state_directory: None, cwd: dir.path().to_path_buf() };
        assert!(read(None, &dir.path().join("absent.toml"), &ctx).unwrap().is_none());
        assert!(matches!(read(Some(Path::new("absent.toml")), Path::new("/x"), &ctx), Err(ConfigError::Read { .. })));
        std::fs::write(dir.path().join("a.toml"), "x = 1").unwrap();
        let (path, text) = read(Some(Path::new("a.toml")), Path::new("/x"), &ctx).unwrap().unwrap();
        assert_eq!((path, text.as_str()), (dir.path().join("a.toml"), "x = 1"));
    }
}
