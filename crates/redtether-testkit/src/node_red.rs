//! The Node-RED the tests run: installed once from `tests/fixtures/node-red/package-lock.json`
//! with `npm ci` into the target directory, and reused while the lockfile is unchanged.

use crate::npm_fixture;
use std::path::PathBuf;

const RED_JS: &str = "node_modules/node-red/red.js";

/// Where the fixture is installed.
pub fn install_dir() -> PathBuf {
    npm_fixture::install_dir("node-red")
}

/// The installed `red.js`, installing it first if needed (serialised across test processes).
pub fn red_js() -> PathBuf {
    npm_fixture::install("node-red", RED_JS).join(RED_JS)
}

/// The fixture's lockfile, as committed.
pub fn lockfile() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(npm_fixture::fixture_dir("node-red").join("package-lock.json")).unwrap())
        .unwrap()
}

/// The exact Node-RED version the lockfile pins.
pub fn pinned_version() -> String {
    lockfile()["packages"]["node_modules/node-red"]["version"].as_str().unwrap().to_string()
}
