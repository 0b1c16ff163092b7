//! Installing the pinned Node-RED with npm into the state directory when it is missing.
//!
//! The package is installed into a staging folder and moved into place only when npm succeeded,
//! with a marker recording the spec it came from; a changed `node_red.package` reinstalls.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const MARKER: &str = ".redtether-package";

/// Why Node-RED could not be installed. The agent keeps running and retries.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// `node_red.node` could not be executed.
    #[error("Node.js is not available: cannot run `{program}` (node_red.node): {source}")]
    NodeMissing {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// `node_red.npm` could not be executed.
    #[error("npm is not available: cannot run `{program}` (node_red.npm): {source}")]
    NpmMissing {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// npm ran and failed.
    #[error("`npm install {package}` failed ({status}): {tail}")]
    NpmFailed { package: String, status: String, tail: String },
    /// The staging or runtime folder could not be prepared.
    #[error("cannot prepare {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The installed entry point, if `runtime_dir` holds an install of exactly `package`.
pub fn installed_red_js(runtime_dir: &Path, package: &str) -> Option<PathBuf> {
    let marker = std::fs::read_to_string(runtime_dir.join(MARKER)).ok()?;
    let red_js = red_js_in(runtime_dir);
    (marker.trim() == package && red_js.is_file()).then_some(red_js)
}

fn red_js_in(dir: &Path) -> PathBuf {
    dir.join("node_modules").join("node-red").join("red.js")
}

/// Installs `package` into `runtime_dir` with npm, logging progress; returns the path of
/// `red.js`. Cancel-safe: dropping the future kills npm.
pub async fn install(node: &str, npm: &str, package: &str, runtime_dir: &Path) -> Result<PathBuf, InstallError> {
    check_runs(node, "--version")
        .await
        .map_err(|source| InstallError::NodeMissing { program: node.to_string(), source })?;
    let npm_version = check_runs(npm, "--version")
        .await
        .map_err(|source| InstallError::NpmMissing { program: npm.to_string(), source })?;

    let staging = runtime_dir.with_file_name("runtime.staging");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    std::fs::write(staging.join("package.json"), "{\"name\":\"redtether-node-red-runtime\",\"private\":true}\n")
        .map_err(io(&staging))?;

    tracing::info!(%package, npm_version = %npm_version.trim(), dir = %runtime_dir.display(), "installing Node-RED with npm (this can take minutes)");
    let started = Instant::now();
    let mut child = Command::new(npm)
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--omit=dev",
            "--save-exact",
            "--loglevel=http",
            "--progress=false",
        ])
        .arg(package)
        .current_dir(&staging)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| InstallError::NpmMissing { program: npm.to_string(), source })?;

    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (status, tail) = tokio::join!(child.wait(), async {
        let (_, tail) = tokio::join!(log_progress(stdout, false), log_progress(stderr, true));
        tail
    });
    let status = status.map_err(io(&staging))?;
    if !status.success() {
        return Err(InstallError::NpmFailed {
            package: package.to_string(),
            status: status.to_string(),
            tail: tail.join(" | "),
        });
    }
    let red_js = red_js_in(&staging);
    if !red_js.is_file() {
        return Err(InstallError::NpmFailed {
            package: package.to_string(),
            status: status.to_string(),
            tail: format!("npm succeeded but {} is missing: is {package:?} a Node-RED package?", red_js.display()),
        });
    }
    std::fs::write(staging.join(MARKER), package).map_err(io(&staging))?;
    if runtime_dir.exists() {
        std::fs::remove_dir_all(runtime_dir).map_err(io(runtime_dir))?;
    }
    std::fs::rename(&staging, runtime_dir).map_err(io(runtime_dir))?;
    let version = installed_version(runtime_dir).unwrap_or_else(|| "?".into());
    tracing::info!(%package, %version, seconds = started.elapsed().as_secs_f32(), "Node-RED installed");
    Ok(red_js_in(runtime_dir))
}

fn installed_version(runtime_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(runtime_dir.join("node_modules/node-red/package.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("version")?.as_str().map(str::to_string)
}

async fn check_runs(program: &str, arg: &str) -> std::io::Result<String> {
    let out = Command::new(program).arg(arg).stdin(Stdio::null()).kill_on_drop(true).output().await?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(std::io::Error::other(format!("`{program} {arg}` exited with {}", out.status)))
    }
}

/// How one line of npm's output is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NpmLine {
    /// One package fetched or found in the cache (`npm http fetch …`, `npm http cache …`):
    /// counted for the progress summary, logged at debug. A fresh install prints hundreds.
    Package,
    /// npm's own warnings and errors.
    Warning,
    /// Blank lines and npm's other notices: debug.
    Noise,
    /// What npm says about the result (`added 279 packages in 12s`): info.
    Outcome,
}

fn classify_npm_line(line: &str) -> NpmLine {
    let lower = line.trim().to_ascii_lowercase();
    if lower.starts_with("npm http ") {
        NpmLine::Package
    } else if lower.starts_with("npm warn") || lower.starts_with("npm err") || lower.starts_with("npm error") {
        NpmLine::Warning
    } else if lower.is_empty() || lower.starts_with("npm ") {
        NpmLine::Noise
    } else {
        NpmLine::Outcome
    }
}

/// Logs npm's output as progress: a summary line every few seconds instead of one line per
/// package, npm's warnings as warnings, its result at info, the rest at debug. Returns the last
/// lines of stderr for the error message.
async fn log_progress<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>, is_stderr: bool) -> Vec<String> {
    let Some(pipe) = pipe else { return Vec::new() };
    let mut lines = BufReader::new(pipe).lines();
    let mut tail: Vec<String> = Vec::new();
    let mut packages = 0u32;
    let mut last_report = Instant::now();
    while let Ok(Some(line)) = lines.next_line().await {
        match classify_npm_line(&line) {
            NpmLine::Package => {
                packages += 1;
                tracing::debug!(target: "npm", "{line}");
                if last_report.elapsed() >= Duration::from_secs(5) {
                    tracing::info!(target: "npm", packages, "npm install in progress");
                    last_report = Instant::now();
                }
                continue;
            }
            NpmLine::Warning => tracing::warn!(target: "npm", "{line}"),
            NpmLine::Noise => tracing::debug!(target: "npm", "{line}"),
            NpmLine::Outcome => tracing::info!(target: "npm", "{line}"),
        }
        if is_stderr {
            tail.push(line);
            if tail.len() > 5 {
                tail.remove(0);
            }
        }
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_only_when_marker_matches_and_entry_point_exists() {
        let dir = tempfile::tempdir().unwrap();
        let rt = dir.path().join("runtime");
        std::fs::create_dir_all(rt.join("node_modules/node-red")).unwrap();
        assert_eq!(installed_red_js(&rt, "node-red@4.1"), None, "no marker");
        std::fs::write(rt.join(MARKER), "node-red@4.1").unwrap();
        assert_eq!(installed_red_js(&rt, "node-red@4.1"), None, "no red.js");
        std::fs::write(rt.join("node_modules/node-red/red.js"), "").unwrap();
        assert_eq!(installed_red_js(&rt, "node-red@4.1"), Some(red_js_in(&rt)));
        assert_eq!(installed_red_js(&rt, "node-red@4.0"), None, "another spec reinstalls");
    }

    #[test]
    fn npm_per_package_lines_are_progress_not_info() {
        // Lines as npm 11 prints them with `--loglevel=http`, a fresh install and a cached one.
        let package = [
            "npm http fetch GET 200 https://registry.npmjs.org/is-number 67ms (cache miss)",
            "npm http cache is-number@https://registry.npmjs.org/is-number/-/is-number-7.0.0.tgz 0ms (cache hit)",
            "npm http fetch GET 200 https://registry.npmjs.org/is-number 9ms (cache stale)",
        ];
        for line in package {
            assert_eq!(classify_npm_line(line), NpmLine::Package, "{line}");
        }
        assert_eq!(classify_npm_line("npm warn deprecated inflight@1.0.6: leaks memory"), NpmLine::Warning);
        assert_eq!(classify_npm_line("npm WARN old style"), NpmLine::Warning);
        assert_eq!(classify_npm_line("npm error code E404"), NpmLine::Warning);
        assert_eq!(classify_npm_line("npm ERR! 404 Not Found"), NpmLine::Warning);
        assert_eq!(classify_npm_line(""), NpmLine::Noise);
        assert_eq!(classify_npm_line("added 279 packages in 12s"), NpmLine::Outcome);
    }

    #[tokio::test]
    async fn missing_npm_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = install("true", "/nonexistent/npm", "node-red@4.1", &dir.path().join("runtime")).await.unwrap_err();
        assert!(matches!(err, InstallError::NpmMissing { .. }), "{err}");
        assert!(err.to_string().contains("node_red.npm"), "{err}");
    }

    #[tokio::test]
    async fn missing_node_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = install("/nonexistent/node", "true", "node-red@4.1", &dir.path().join("runtime")).await.unwrap_err();
        assert!(err.to_string().contains("node_red.node"), "{err}");
    }
}
