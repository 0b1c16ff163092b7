//! What the deployer asks of Node-RED and npm: the node types the running Node-RED provides
//! and whether it loaded the flows (its admin API on loopback, with the gate's own credential),
//! installing a snapshot's modules, and the types those modules register.

use super::flows::types_registered_in_html;
use crate::supervisor::{ADMIN_ROOT, GATE_TOKEN_HEADER, Perm, UpstreamTokens};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

/// How long npm may take to install a snapshot's modules.
const NPM_TIMEOUT: Duration = Duration::from_secs(600);

/// What went wrong asking Node-RED or npm.
#[derive(Debug, thiserror::Error)]
pub enum NodeRedError {
    #[error("Node-RED is not running")]
    NotRunning,
    /// No answer: refused, cut off or timed out.
    #[error("{0}")]
    Request(#[source] reqwest::Error),
    #[error("Node-RED answered {path} with {status}")]
    Status { path: String, status: reqwest::StatusCode },
    #[error("{0}")]
    Body(#[source] reqwest::Error),
    #[error("{path}: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("/nodes is not a list")]
    NodesNotAList,
    #[error("cannot run {npm}: {source}")]
    NpmMissing {
        npm: String,
        #[source]
        source: std::io::Error,
    },
    #[error("npm did not finish within {} s", NPM_TIMEOUT.as_secs())]
    NpmTimeout,
    /// npm ran and failed; `said` is the end of what it wrote to stderr.
    #[error("npm install failed ({status}): {said}")]
    NpmFailed { status: std::process::ExitStatus, said: String },
}

#[derive(Clone)]
pub struct AdminApi {
    client: reqwest::Client,
    token: String,
    upstream: watch::Receiver<Option<SocketAddr>>,
}

impl AdminApi {
    pub fn new(tokens: &UpstreamTokens, upstream: watch::Receiver<Option<SocketAddr>>) -> Self {
        let client = crate::http_client::loopback(Duration::from_secs(10));
        AdminApi { client, token: tokens.token("redtether-deploy", Perm::Full), upstream }
    }

    async fn get(&self, path: &str) -> Result<serde_json::Value, NodeRedError> {
        let addr = (*self.upstream.borrow()).ok_or(NodeRedError::NotRunning)?;
        let response = self
            .client
            .get(format!("http://{addr}{ADMIN_ROOT}{path}"))
            .header(GATE_TOKEN_HEADER, &self.token)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(NodeRedError::Request)?;
        if !response.status().is_success() {
            return Err(NodeRedError::Status { path: path.to_string(), status: response.status() });
        }
        let body = response.bytes().await.map_err(NodeRedError::Body)?;
        serde_json::from_slice(&body).map_err(|source| NodeRedError::Json { path: path.to_string(), source })
    }

    /// Every node type the running Node-RED has registered, by the module providing it.
    pub async fn registered_types(&self) -> Result<BTreeMap<String, String>, NodeRedError> {
        let sets = self.get("/nodes").await?;
        let mut types = BTreeMap::new();
        for set in sets.as_array().ok_or(NodeRedError::NodesNotAList)? {
            let module = set.get("module").and_then(|m| m.as_str()).unwrap_or_default();
            let enabled = set.get("enabled").and_then(|e| e.as_bool()).unwrap_or(true);
            for t in set.get("types").and_then(|t| t.as_array()).into_iter().flatten() {
                if let (Some(t), true) = (t.as_str(), enabled) {
                    types.insert(t.to_string(), module.to_string());
                }
            }
        }
        Ok(types)
    }

    /// The ids of the flows Node-RED has loaded.
    pub async fn loaded_flow_ids(&self) -> Result<BTreeSet<String>, NodeRedError> {
        let flows = self.get("/flows").await?;
        let list = flows.get("flows").unwrap_or(&flows);
        Ok(ids(list.as_array().map(Vec::as_slice).unwrap_or_default()))
    }
}

pub fn ids(flows: &[serde_json::Value]) -> BTreeSet<String> {
    flows.iter().filter_map(|n| n.get("id").and_then(|i| i.as_str()).map(str::to_string)).collect()
}

/// Installs `modules` into `dir` (which holds their package.json) with npm, preferring its
/// offline cache; on failure the error ends with what npm said.
pub async fn npm_install(npm: &str, dir: &Path, cache: Option<&Path>) -> Result<(), NodeRedError> {
    let mut command = tokio::process::Command::new(npm);
    command
        .args(["install", "--no-audit", "--no-fund", "--omit=dev", "--prefer-offline", "--loglevel=error"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(cache) = cache {
        command.arg("--cache").arg(cache);
    }
    tracing::info!(dir = %dir.display(), "installing the snapshot's modules with npm");
    let output = match tokio::time::timeout(NPM_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => return Err(NodeRedError::NpmMissing { npm: npm.to_string(), source }),
        Err(_) => return Err(NodeRedError::NpmTimeout),
    };
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).rev().take(6).collect();
    let said = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
    Err(NodeRedError::NpmFailed { status: output.status, said })
}

/// The node types the modules installed in `dir/node_modules` register, read from the HTML
/// files their package.json lists under `node-red.nodes` (where Node-RED itself looks).
pub fn module_types(dir: &Path, modules: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut types = BTreeSet::new();
    for name in modules.keys() {
        let root = dir.join("node_modules").join(name);
        let Ok(text) = std::fs::read(root.join("package.json")) else { continue };
        let Ok(package) = serde_json::from_slice::<serde_json::Value>(&text) else { continue };
        let nodes = package.pointer("/node-red/nodes").and_then(|n| n.as_object());
        for js in nodes.into_iter().flat_map(|n| n.values()).filter_map(|v| v.as_str()) {
            let html = root.join(Path::new(js).with_extension("html"));
            // Module files stay inside the module: a path that leaves it is ignored.
            if html.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(&html) {
                types.extend(types_registered_in_html(&text));
            }
        }
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_types_come_from_the_html_next_to_each_listed_node() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("node_modules/node-red-contrib-x");
        std::fs::create_dir_all(module.join("nodes")).unwrap();
        std::fs::write(
            module.join("package.json"),
            br#"{"name":"node-red-contrib-x","node-red":{"nodes":{"x":"nodes/x.js","evil":"../../../etc/y.js"}}}"#,
        )
        .unwrap();
        std::fs::write(module.join("nodes/x.html"), br#"<script>RED.nodes.registerType("x-node",{})</script>"#)
            .unwrap();
        let modules = BTreeMap::from([
            ("node-red-contrib-x".to_string(), "1.0.0".to_string()),
            ("not-installed".to_string(), "1.0.0".to_string()),
        ]);
        assert_eq!(module_types(dir.path(), &modules), BTreeSet::from(["x-node".to_string()]));
    }
}
