//! The device SBOM: a CycloneDX 1.5 JSON document of the software that actually runs on the
//! device, read from disk each time it is asked for.
//!
//! It lists Node-RED and every package it loads (the packages of its install tree reachable
//! from `node-red` through Node's own resolution, so a global install's neighbours are left
//! out), every package in Node-RED's user directory (`<state_dir>/node-red/node_modules`: the
//! contrib nodes installed from the palette and what they need), the Node.js runtime (its
//! version from `node --version`), and redtether itself as the document's subject. Each npm
//! package carries its purl (also its bom-ref; one component per name@version, however many
//! places it is installed in), its declared license and, when a lockfile has it for the
//! version installed, its tarball hash. The `dependencies` graph is what `require` finds:
//! redtether → Node-RED and Node.js, Node-RED → its dependencies and the contrib nodes it
//! loads, and so on down.
//!
//! This module owns reading the install trees and lockfiles (tolerantly: what cannot be read
//! is skipped with a warning, never a panic, and symlink loops end) and building the document;
//! `redtether sbom` (in `cli`) prints or writes it, and the agent can send [`generate`]'s
//! value to the hub. The parts are pure and unit-tested: purl encoding (`purl`), lockfile
//! integrity to hashes (`hash`, `lockfile`), license mapping (`license`), Node's resolution
//! over an in-memory tree (`tree`), the component graph (`graph`) and the document
//! (`document`); `scan` and [`generate`] do the I/O.
//!
//! [`add_latest`] (`redtether sbom --latest`) annotates the npm components with the newest
//! version the npm registry knows: the cache and the annotation are pure (`latest`), the
//! lookups bounded in time (`registry`), and a registry that cannot be reached never keeps the
//! document from being made.

mod document;
mod graph;
mod hash;
mod latest;
mod license;
mod locate;
mod lockfile;
mod purl;
mod registry;
mod scan;
mod tree;

use crate::config::Settings;
use crate::state_dir::StateDir;
use graph::Graph;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why no SBOM could be made.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// There is no Node-RED where the settings say it is.
    #[error("Node-RED is not installed in {}: {hint}", dir.display())]
    NotInstalled { dir: PathBuf, hint: &'static str },
    /// `node_red.command` does not say where Node-RED is installed.
    #[error(
        "cannot tell where Node-RED is installed: node_red.command {command:?} names no \
         .../node_modules/node-red/red.js (directly or through a symlink)"
    )]
    NoRedJs { command: Vec<String> },
    /// Node-RED's own package.json cannot be used.
    #[error("cannot read Node-RED's package.json: {reason}")]
    NodeRedManifest { reason: String },
    /// The Node.js program cannot be run.
    #[error("Node.js is not available: cannot run `{program} --version`: {source}")]
    NodeUnavailable {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The Node.js program ran but did not say its version.
    #[error("`{program} --version` did not print a Node.js version ({detail})")]
    NodeVersion { program: String, detail: String },
}

/// The device's SBOM as CycloneDX 1.5 JSON. Blocking (reads the install trees, runs
/// `node --version`): call it from a blocking task. Warnings about packages that could not be
/// read go to `tracing`.
pub fn generate(settings: &Settings) -> Result<serde_json::Value, SbomError> {
    let root = match locate::install_root(settings) {
        Some(root) => root,
        None => {
            let command = match &settings.node_red.launch {
                crate::config::NodeRedLaunch::Command(command) => command.clone(),
                crate::config::NodeRedLaunch::Managed { .. } => Vec::new(),
            };
            return Err(SbomError::NoRedJs { command });
        }
    };
    let node_red_manifest = root.dir.join("node_modules/node-red/package.json");
    if !node_red_manifest.is_file() {
        let hint = if root.managed {
            "run the agent once or set node_red.command"
        } else {
            "node_red.command points there, but node_modules/node-red/package.json is missing"
        };
        return Err(SbomError::NotInstalled { dir: root.dir, hint });
    }
    let program = locate::node_program(settings);
    let node_version = node_version(&program)?;

    let main = scan::scan(&root.dir);
    warn_all(&main.warnings);
    let Some(node_red) = Graph::purl_of(&main.tree, "node_modules/node-red") else {
        let manifest = node_red_manifest.display().to_string();
        let reason = main.warnings.iter().find(|w| w.contains(&manifest)).cloned().unwrap_or(manifest);
        return Err(SbomError::NodeRedManifest { reason });
    };
    let mut graph = Graph::default();
    graph.add_reachable(&main.tree, ["node_modules/node-red"], &root.dir.display().to_string());

    let user_dir = StateDir::new(&settings.state_dir).node_red_user_dir();
    let user = scan::scan(&user_dir);
    warn_all(&user.warnings);
    graph.add_reachable(&user.tree, user.tree.packages.keys().map(String::as_str), &user_dir.display().to_string());
    // Node-RED loads the Node-RED modules at the top of its user directory.
    for (location, package) in &user.tree.packages {
        if package.node_red_module && tree::parent_location(location).is_empty() {
            graph.add_edge(&node_red, &purl::npm(&package.name, &package.version));
        }
    }
    warn_all(&graph.warnings);

    let mut random = [0u8; 16];
    rand::fill(&mut random[..]);
    let timestamp = redtether_proto::time::format_seconds(std::time::SystemTime::now());
    let facts = document::Facts {
        node_red: &node_red,
        node_version: &node_version,
        serial: uuid::Builder::from_random_bytes(random).into_uuid(),
        timestamp: &timestamp,
        properties: vec![
            ("redtether:node-red:install-root", path_text(&root.dir)),
            ("redtether:node-red:user-dir", path_text(&user_dir)),
            ("redtether:node:program", program),
        ],
    };
    Ok(document::document(&graph, &facts))
}

/// The npm registry `--latest` asks, as npm would choose it from the environment
/// (`npm_config_registry`, `NPM_CONFIG_REGISTRY`, else `https://registry.npmjs.org`).
pub fn registry_from_environment() -> String {
    let var = |name| std::env::var(name).ok();
    latest::registry_from(var("npm_config_registry").as_deref(), var("NPM_CONFIG_REGISTRY").as_deref())
}

/// Annotates `doc`'s npm components with the newest version `registry` knows
/// (`redtether:npm:latest` and friends, see `latest`), from the cache in the state directory
/// where it has a fresh answer and from the registry otherwise, within the bounds of
/// `registry::LIMITS`. When the registry cannot be reached, cached answers are used even when
/// stale (and marked so), and a warning is logged; the document is annotated either way, so
/// this cannot fail. Blocking (files, network on a runtime of its own): not from inside an
/// async runtime.
pub fn add_latest(doc: &mut serde_json::Value, state_dir: &StateDir, registry: &str) {
    let cache_file = state_dir.root().join(latest::CACHE_FILE);
    let cache = match std::fs::read(&cache_file) {
        Ok(bytes) => latest::Cache::parse(&bytes, registry).unwrap_or_else(|e| {
            tracing::warn!("sbom: ignoring the cache {}: {e}", cache_file.display());
            latest::Cache::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => latest::Cache::default(),
        Err(e) => {
            tracing::warn!("sbom: ignoring the cache {}: {e}", cache_file.display());
            latest::Cache::default()
        }
    };
    let names: BTreeSet<String> = latest::npm_names(doc);
    let now = unix_now();
    let to_ask = cache.to_ask(&names, now);
    let answers = registry::lookup_blocking(registry, &to_ask, registry::LIMITS);
    let resolution = latest::resolve(registry, &names, &cache, &to_ask, &answers, now, registry::LIMITS.deadline);
    latest::annotate(doc, &resolution, now);

    if let Some(error) = &resolution.error {
        tracing::warn!(
            "sbom: npm registry {registry}: {error}; latest versions: {} from the registry, {} cached ({} of them \
             stale, older than {} h), {} packages without",
            resolution.count(latest::Origin::Registry),
            resolution.count(latest::Origin::Cache) + resolution.count(latest::Origin::Stale),
            resolution.count(latest::Origin::Stale),
            latest::FRESH_FOR.as_secs() / 3600,
            names.len() - resolution.known.len(),
        );
    }
    if !answers.found.is_empty() {
        let updated = cache.updated(registry, &names, &answers, now);
        let text = serde_json::to_vec_pretty(&updated).expect("the cache serialises");
        if let Err(e) = crate::state_dir::write_private(&cache_file, &text) {
            tracing::warn!("sbom: cannot keep the npm registry's answers: {e}");
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn node_version(program: &str) -> Result<String, SbomError> {
    let output = Command::new(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| SbomError::NodeUnavailable { program: program.to_string(), source })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match locate::parse_node_version(&stdout) {
        Some(version) if output.status.success() => Ok(version),
        _ => Err(SbomError::NodeVersion {
            program: program.to_string(),
            detail: format!("{}, output {:?}", output.status, stdout.trim()),
        }),
    }
}

fn warn_all(warnings: &[String]) {
    for warning in warnings {
        tracing::warn!("sbom: {warning}");
    }
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}
