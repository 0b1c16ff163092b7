//! `redtether sbom`: the real binary on the real fixture Node-RED (installed by `npm ci` from its
//! committed lockfile) and a contrib module in the user directory. The document is checked
//! against the lockfile and the files on disk, and validated by an independent validator:
//! OWASP's own `@cyclonedx/cyclonedx-library` against the CycloneDX 1.5 JSON schema, with the
//! purls parsed by `packageurl-js`. `--latest` is checked against a stand-in npm registry on
//! loopback (never the internet).

use common::{npm_registry, tinyproxy};
use redtether_testkit as common;

use base64::Engine;
use common::agent::{BIN, fixture_node_red};
use common::{cyclonedx, node_red, npm_fixture};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A state directory and config running the fixture Node-RED (`node_red.command`), with a
/// contrib module and its scoped dependency in the user directory.
struct Device {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Device {
    fn new(node_red: &str) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        let state = dir.path().join("state");
        std::fs::write(&config, format!("state_dir = {:?}\n[node_red]\n{node_red}\n", state.display().to_string()))
            .unwrap();
        Device { dir, config }
    }

    fn with_fixture_node_red() -> Device {
        let device = Device::new(&fixture_node_red());
        let modules = device.user_dir().join("node_modules");
        write_package(
            &modules.join("node-red-contrib-sbom-probe"),
            json!({
                "name": "node-red-contrib-sbom-probe", "version": "1.2.3", "license": "(MIT OR Apache-2.0)",
                "dependencies": {"@probe/helper": "^2.0.0"},
                "node-red": {"nodes": {"probe": "probe.js"}}
            }),
        );
        write_package(
            &modules.join("@probe/helper"),
            json!({"name": "@probe/helper", "version": "2.0.1", "license": "SEE LICENSE IN LICENSE.txt"}),
        );
        device
    }

    fn user_dir(&self) -> PathBuf {
        self.dir.path().join("state/node-red")
    }

    fn sbom(&self, extra: &[&str]) -> Output {
        Command::new(BIN).arg("sbom").args(extra).arg("--config").arg(&self.config).output().unwrap()
    }

    /// `redtether sbom ARGS` with `npm_config_registry` = `registry` (and only that: no proxy
    /// from the test's own environment either).
    fn sbom_with_registry(&self, extra: &[&str], registry: &str) -> Output {
        self.sbom_with_env(extra, registry, &[])
    }

    /// [`Device::sbom_with_registry`] with the variables `env` set in its environment.
    fn sbom_with_env(&self, extra: &[&str], registry: &str, env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(BIN);
        command
            .arg("sbom")
            .args(extra)
            .arg("--config")
            .arg(&self.config)
            .env("npm_config_registry", registry)
            .env_remove("NPM_CONFIG_REGISTRY");
        for name in PROXY_VARIABLES {
            command.env_remove(name);
        }
        command.envs(env.iter().copied()).output().unwrap()
    }

    /// `redtether sbom --latest --output F` against `registry`, which must exit 0; the
    /// document, its file and stderr.
    fn sbom_latest(&self, registry: &str) -> (Value, PathBuf, String) {
        self.sbom_latest_with_env(registry, &[])
    }

    /// [`Device::sbom_latest`] with the variables `env` set in its environment.
    fn sbom_latest_with_env(&self, registry: &str, env: &[(&str, &str)]) -> (Value, PathBuf, String) {
        let file = self.dir.path().join("latest.json");
        let out = self.sbom_with_env(&["--latest", "--output", file.to_str().unwrap()], registry, env);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        (serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap(), file, stderr)
    }

    fn latest_cache(&self) -> PathBuf {
        self.dir.path().join("state/sbom-latest.json")
    }

    /// `redtether sbom --output F`, which must succeed; returns F and the document.
    fn sbom_file(&self) -> (PathBuf, Value) {
        let file = self.dir.path().join("out/sbom.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let out = self.sbom(&["--output", file.to_str().unwrap()]);
        assert!(out.status.success(), "redtether sbom failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout.is_empty(), "with --output nothing goes to stdout");
        let doc = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        (file, doc)
    }
}

/// What names a proxy to curl, npm and reqwest (lower case first where both are read).
const PROXY_VARIABLES: [&str; 8] =
    ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"];

/// The value of the property `name` of a component or of the metadata.
fn prop<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    object["properties"].as_array()?.iter().find(|p| p["name"] == name)?["value"].as_str()
}

/// The one component of the npm package `name`.
fn npm_component<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let found: Vec<&Value> = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["purl"].as_str().unwrap().starts_with("pkg:npm/")
                && match c["group"].as_str() {
                    Some(group) => format!("{group}/{}", c["name"].as_str().unwrap()) == name,
                    None => c["name"] == name,
                }
        })
        .collect();
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    found[0]
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn write_package(dir: &Path, manifest: Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("package.json"), manifest.to_string()).unwrap();
}

fn components(doc: &Value) -> BTreeMap<String, Value> {
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["bom-ref"].as_str().unwrap().to_string(), c.clone()))
        .collect()
}

fn depends_on(doc: &Value, r: &str) -> BTreeSet<String> {
    let entry = doc["dependencies"].as_array().unwrap().iter().find(|e| e["ref"] == r);
    let entry = entry.unwrap_or_else(|| panic!("no dependencies entry for {r}"));
    entry["dependsOn"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// The hex of a lockfile integrity, decoded here rather than by redtether.
fn sha512_hex(integrity: &str) -> String {
    let b64 = integrity.strip_prefix("sha512-").expect("the fixture's lockfile holds sha512 hashes");
    hex::encode(base64::engine::general_purpose::STANDARD.decode(b64).unwrap())
}

fn node_version() -> String {
    let out = Command::new("node").arg("--version").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().strip_prefix('v').unwrap().to_string()
}

#[test]
fn sbom_of_the_fixture_node_red_is_schema_valid_and_matches_the_lockfile() {
    let device = Device::with_fixture_node_red();
    let (file, doc) = device.sbom_file();
    let by_ref = components(&doc);
    let lock = node_red::lockfile();
    let packages = lock["packages"].as_object().unwrap();

    // The independent validator accepts it: schema and purls.
    assert_eq!(cyclonedx::validate(&file), json!({"valid": true}));

    assert_eq!((doc["bomFormat"].as_str(), doc["specVersion"].as_str()), (Some("CycloneDX"), Some("1.5")));
    assert_eq!(doc["version"], 1);
    let serial = doc["serialNumber"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(serial.strip_prefix("urn:uuid:").unwrap()).is_ok(), "{serial}");
    assert!(humantime::parse_rfc3339(doc["metadata"]["timestamp"].as_str().unwrap()).is_ok());

    // redtether is the subject, and depends on Node-RED and Node.js.
    let root = &doc["metadata"]["component"];
    assert_eq!((root["name"].as_str(), root["version"].as_str()), (Some("redtether"), Some(env!("CARGO_PKG_VERSION"))));
    assert_eq!(doc["metadata"]["tools"]["components"][0]["version"], env!("CARGO_PKG_VERSION"));
    let node_red_ref = format!("pkg:npm/node-red@{}", node_red::pinned_version());
    let node_ref = format!("pkg:generic/node@{}", node_version());
    assert_eq!(
        depends_on(&doc, root["bom-ref"].as_str().unwrap()),
        BTreeSet::from([node_red_ref.clone(), node_ref.clone()])
    );

    // Node-RED at the pinned version.
    let nr = &by_ref[&node_red_ref];
    assert_eq!((nr["name"].as_str(), nr["type"].as_str()), (Some("node-red"), Some("application")));
    assert_eq!(nr["version"].as_str(), Some(node_red::pinned_version().as_str()));
    assert_eq!(nr["purl"].as_str(), Some(node_red_ref.as_str()));

    // Node.js as `node --version` says.
    let node = &by_ref[&node_ref];
    assert_eq!((node["name"].as_str(), node["type"].as_str()), (Some("node"), Some("platform")));
    assert_eq!(node["version"].as_str(), Some(node_version().as_str()));

    // express, a dependency of Node-RED, with the version and hash the lockfile holds.
    let express_lock = &packages["node_modules/express"];
    let express_ref = format!("pkg:npm/express@{}", express_lock["version"].as_str().unwrap());
    let express = &by_ref[&express_ref];
    assert_eq!(express["version"], express_lock["version"]);
    assert_eq!(
        express["hashes"],
        json!([{"alg": "SHA-512", "content": sha512_hex(express_lock["integrity"].as_str().unwrap())}])
    );
    assert_eq!(express["licenses"], json!([{"license": {"id": "MIT"}}]));
    assert!(depends_on(&doc, &node_red_ref).contains(&express_ref), "node-red → express");

    // Resolution as Node does it: express has its own qs, nested, and depends on that one.
    let nested_qs = packages["node_modules/express/node_modules/qs"]["version"].as_str().unwrap();
    let top_qs = packages["node_modules/qs"]["version"].as_str().unwrap();
    assert_ne!(nested_qs, top_qs, "the fixture keeps two versions of qs");
    let express_deps = depends_on(&doc, &express_ref);
    assert!(express_deps.contains(&format!("pkg:npm/qs@{nested_qs}")), "{express_deps:?}");
    assert!(!express_deps.contains(&format!("pkg:npm/qs@{top_qs}")), "{express_deps:?}");

    // A scoped package: group and name apart, the @ of the namespace encoded in the purl.
    let runtime_ref = format!("pkg:npm/%40node-red/runtime@{}", node_red::pinned_version());
    let runtime = &by_ref[&runtime_ref];
    assert_eq!((runtime["group"].as_str(), runtime["name"].as_str()), (Some("@node-red"), Some("runtime")));
    assert!(depends_on(&doc, &node_red_ref).contains(&runtime_ref));

    // Every package npm installed from the lockfile is there (as name@version), with its hash.
    let install = node_red::install_dir();
    let mut checked = 0;
    for (location, entry) in packages {
        if location.is_empty() || !install.join(location).join("package.json").is_file() {
            continue; // the root, and optional packages for other platforms
        }
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(install.join(location).join("package.json")).unwrap()).unwrap();
        let name = manifest["name"].as_str().unwrap();
        let version = entry["version"].as_str().unwrap();
        let component = by_ref
            .values()
            .find(|c| {
                let full = match c["group"].as_str() {
                    Some(group) => format!("{group}/{}", c["name"].as_str().unwrap()),
                    None => c["name"].as_str().unwrap().to_string(),
                };
                full == name && c["version"] == version
            })
            .unwrap_or_else(|| panic!("{location} ({name}@{version}) is not in the SBOM"));
        if let Some(integrity) = entry["integrity"].as_str() {
            let expected = json!({"alg": "SHA-512", "content": sha512_hex(integrity)});
            assert!(component["hashes"].as_array().unwrap().contains(&expected), "{location}: {component}");
        }
        checked += 1;
    }
    assert!(checked > 400, "only {checked} installed packages checked");

    // The contrib module in the user dir, its scoped dependency, and the edges to them.
    let probe_ref = "pkg:npm/node-red-contrib-sbom-probe@1.2.3";
    let helper_ref = "pkg:npm/%40probe/helper@2.0.1";
    assert_eq!(by_ref[probe_ref]["licenses"], json!([{"expression": "(MIT OR Apache-2.0)"}]));
    assert_eq!(by_ref[helper_ref]["licenses"], json!([{"license": {"name": "SEE LICENSE IN LICENSE.txt"}}]));
    assert_eq!(by_ref[helper_ref]["group"], "@probe");
    assert!(by_ref[probe_ref].get("hashes").is_none(), "no lockfile in the user dir, so no hash");
    assert!(depends_on(&doc, &node_red_ref).contains(probe_ref), "Node-RED loads the contrib module");
    assert_eq!(depends_on(&doc, probe_ref), BTreeSet::from([helper_ref.to_string()]));

    // The graph is closed: bom-refs are unique, every component has an entry, and every ref
    // in it is a component (or redtether itself).
    let refs: Vec<&str> =
        doc["components"].as_array().unwrap().iter().map(|c| c["bom-ref"].as_str().unwrap()).collect();
    assert_eq!(refs.len(), by_ref.len(), "bom-refs are unique");
    let mut known: BTreeSet<&str> = refs.iter().copied().collect();
    known.insert(root["bom-ref"].as_str().unwrap());
    let entries = doc["dependencies"].as_array().unwrap();
    let with_entry: BTreeSet<&str> = entries.iter().map(|e| e["ref"].as_str().unwrap()).collect();
    assert_eq!(with_entry, known);
    for entry in entries {
        for to in entry["dependsOn"].as_array().unwrap() {
            assert!(known.contains(to.as_str().unwrap()), "{} depends on unknown {to}", entry["ref"]);
        }
    }
}

#[test]
fn the_validator_rejects_what_breaks_the_schema_or_a_purl() {
    let device = Device::with_fixture_node_red();
    let (file, doc) = device.sbom_file();
    assert_eq!(cyclonedx::validate(&file), json!({"valid": true}), "the control: unchanged it passes");

    let index = doc["components"].as_array().unwrap().iter().position(|c| c["name"] == "express").unwrap();
    let mut nameless = doc.clone();
    nameless["components"][index].as_object_mut().unwrap().remove("name");
    let broken = device.dir.path().join("nameless.json");
    std::fs::write(&broken, nameless.to_string()).unwrap();
    let verdict = cyclonedx::validate(&broken);
    assert_eq!(verdict["valid"], false);
    let errors = verdict["schemaErrors"].as_array().expect("the schema validator rejects it");
    assert!(errors.iter().any(|e| e["keyword"] == "required" && e["params"]["missingProperty"] == "name"), "{verdict}");

    let mut mislabelled = doc.clone();
    mislabelled["components"][index]["version"] = json!("0.0.1");
    std::fs::write(&broken, mislabelled.to_string()).unwrap();
    let verdict = cyclonedx::validate(&broken);
    assert_eq!(verdict["schemaErrors"], Value::Null, "still schema-valid");
    assert!(verdict["purlErrors"][0].as_str().unwrap().contains("does not name express@0.0.1"), "{verdict}");
}

/// A second, independent opinion on the graph: npm's own `npm sbom` (arborist) over the
/// fixture's lockfile must list the same packages with the same edges, apart from the optional
/// packages for other platforms that the lockfile names and npm did not install here.
#[test]
fn components_and_edges_agree_with_npms_own_sbom_of_the_lockfile() {
    let device = Device::new(&fixture_node_red());
    let (_, ours) = device.sbom_file();
    let ours_by_ref = components(&ours);

    let project = tempfile::tempdir().unwrap();
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(npm_fixture::fixture_dir("node-red").join("package.json")).unwrap())
            .unwrap();
    manifest["version"] = json!("0.0.0"); // npm sbom wants a version for the root
    std::fs::write(project.path().join("package.json"), manifest.to_string()).unwrap();
    std::fs::copy(
        npm_fixture::fixture_dir("node-red").join("package-lock.json"),
        project.path().join("package-lock.json"),
    )
    .unwrap();
    let out = Command::new("npm")
        .args(["sbom", "--sbom-format", "cyclonedx", "--package-lock-only", "--offline"])
        .current_dir(project.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "npm sbom: {}", String::from_utf8_lossy(&out.stderr));
    let npm: Value = serde_json::from_slice(&out.stdout).unwrap();
    let purl_of: BTreeMap<&str, &str> = npm["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["bom-ref"].as_str().unwrap(), c["purl"].as_str().unwrap()))
        .collect();

    let lock = node_red::lockfile();
    let install = node_red::install_dir();
    let mut extra = 0;
    for c in npm["components"].as_array().unwrap() {
        let purl = c["purl"].as_str().unwrap();
        if ours_by_ref.contains_key(purl) {
            continue;
        }
        // Only an optional package that is nowhere on disk may be missing from ours.
        assert_eq!(c["scope"], "optional", "{purl} is missing from redtether's SBOM");
        let name = c["name"].as_str().unwrap();
        for (location, entry) in lock["packages"].as_object().unwrap() {
            if location.ends_with(&format!("node_modules/{name}")) && entry["version"] == c["version"] {
                assert!(!install.join(location).exists(), "{location} is installed but not in the SBOM");
            }
        }
        extra += 1;
    }
    let npm_purls: BTreeSet<&str> = purl_of.values().copied().collect();
    let ours_npm: Vec<&String> = ours_by_ref.keys().filter(|r| r.starts_with("pkg:npm/")).collect();
    for r in &ours_npm {
        assert!(npm_purls.contains(r.as_str()), "{r} is not in npm's SBOM");
    }
    assert!(ours_npm.len() > 400 && extra < 30, "{} in common, {extra} only in npm's", ours_npm.len());

    for entry in npm["dependencies"].as_array().unwrap() {
        let Some(from) = purl_of.get(entry["ref"].as_str().unwrap()) else {
            continue; // npm's root project
        };
        if !ours_by_ref.contains_key(*from) {
            continue;
        }
        let theirs: BTreeSet<String> = entry["dependsOn"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| purl_of[r.as_str().unwrap()].to_string())
            .filter(|p| ours_by_ref.contains_key(p))
            .collect();
        assert_eq!(depends_on(&ours, from), theirs, "edges of {from}");
    }
}

#[test]
fn every_license_id_redtether_can_write_is_in_the_validators_spdx_list() {
    npm_fixture::install("cyclonedx", "node_modules/@cyclonedx/cyclonedx-library/package.json");
    let schema: Value = serde_json::from_slice(
        &std::fs::read(
            npm_fixture::install_dir("cyclonedx")
                .join("node_modules/@cyclonedx/cyclonedx-library/res/schema/spdx.SNAPSHOT.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let accepted: BTreeSet<&str> = schema["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let ours = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sbom/spdx_ids.txt")).unwrap();
    let ours: Vec<&str> = ours.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert!(ours.len() > 800);
    let unknown: Vec<&&str> = ours.iter().filter(|id| !accepted.contains(**id)).collect();
    assert!(unknown.is_empty(), "ids the schema refuses: {unknown:?}");
}

#[test]
fn without_output_the_document_goes_to_stdout() {
    let device = Device::new(&fixture_node_red());
    let out = device.sbom(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(components(&doc).contains_key(&format!("pkg:npm/node-red@{}", node_red::pinned_version())));
}

#[test]
fn managed_node_red_is_read_from_the_runtime_folder() {
    let device = Device::new("node = \"node\"");
    std::fs::create_dir_all(device.dir.path().join("state")).unwrap();
    // The agent's managed install, here the fixture's tree linked into place.
    node_red::red_js();
    std::os::unix::fs::symlink(node_red::install_dir(), device.dir.path().join("state/runtime")).unwrap();
    let (_, doc) = device.sbom_file();
    let by_ref = components(&doc);
    let node_red_ref = format!("pkg:npm/node-red@{}", node_red::pinned_version());
    assert!(by_ref.contains_key(&node_red_ref));
    assert!(depends_on(&doc, &node_red_ref).len() > 5);
    let root = doc["metadata"]["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "redtether:node-red:install-root");
    assert_eq!(root.unwrap()["value"], device.dir.path().join("state/runtime").display().to_string());
}

#[test]
fn odd_packages_in_the_user_dir_are_skipped_with_a_warning() {
    let device = Device::with_fixture_node_red();
    let modules = device.user_dir().join("node_modules");
    std::fs::create_dir_all(modules.join("broken-json")).unwrap();
    std::fs::write(modules.join("broken-json/package.json"), "{\"name\": ").unwrap();
    write_package(&modules.join("no-version"), json!({"name": "no-version"}));
    write_package(&modules.join("not-an-object"), json!(["x"]));
    write_package(
        &modules.join("needs-missing"),
        json!({"name": "needs-missing", "version": "1.0.0", "dependencies": {"gone": "1"}}),
    );
    // A link back to the user dir's own node_modules: a loop.
    std::os::unix::fs::symlink(&modules, modules.join("@probe/helper/node_modules")).unwrap();
    let file = device.dir.path().join("sbom.json");
    let out = device.sbom(&["--output", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("broken-json/package.json: not valid JSON"), "{stderr}");
    assert!(stderr.contains("no-version/package.json: package.json has no \"version\""), "{stderr}");
    assert!(stderr.contains("not-an-object/package.json: package.json is not a JSON object"), "{stderr}");
    assert!(
        stderr.contains("needs-missing@1.0.0") && stderr.contains("depends on gone, which is not installed"),
        "{stderr}"
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let by_ref = components(&doc);
    assert!(by_ref.contains_key("pkg:npm/node-red-contrib-sbom-probe@1.2.3"));
    assert!(by_ref.contains_key("pkg:npm/needs-missing@1.0.0"));
    assert!(!by_ref.keys().any(|r| r.contains("broken-json") || r.contains("no-version")));
    assert_eq!(cyclonedx::validate(&file), json!({"valid": true}));
}

#[test]
fn a_state_dir_without_node_red_is_a_clear_error() {
    let device = Device::new("");
    let file = device.dir.path().join("sbom.json");
    let out = device.sbom(&["--output", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let runtime = device.dir.path().join("state/runtime");
    assert!(
        stderr.contains(&format!(
            "Node-RED is not installed in {}: run the agent once or set node_red.command",
            runtime.display()
        )),
        "{stderr}"
    );
    assert!(!file.exists(), "no document is written");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_command_that_names_no_red_js_is_a_clear_error() {
    let device = Device::new("command = [\"/bin/sh\", \"-c\", \"exec node-red\"]");
    let out = device.sbom(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot tell where Node-RED is installed"), "{stderr}");
    assert!(stderr.contains("node_modules/node-red/red.js"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn an_output_that_cannot_be_written_exits_73() {
    let device = Device::new(&fixture_node_red());
    let file = device.dir.path().join("missing-folder/sbom.json");
    let out = device.sbom(&["--output", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(73), "{stderr}");
    assert!(stderr.contains("cannot write the SBOM to"), "{stderr}");
}

#[test]
fn a_node_that_cannot_run_is_a_clear_error() {
    let red_js = node_red::red_js().display().to_string();
    let device = Device::new(&format!("command = [\"/nonexistent/bin/node\", {red_js:?}]"));
    let out = device.sbom(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Node.js is not available: cannot run `/nonexistent/bin/node --version`"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// The versions the stand-in registry serves: Node-RED, a scoped package and a dependency.
const SERVED: [(&str, &str); 3] = [("node-red", "99.0.0"), ("@node-red/runtime", "99.0.1"), ("express", "98.7.6")];

#[test]
fn latest_annotates_from_the_registry_then_from_the_cache_without_asking_again() {
    let registry = npm_registry::Registry::start(&SERVED);
    let device = Device::with_fixture_node_red();
    let before = unix_now();
    let (doc, file, stderr) = device.sbom_latest(&registry.url);
    assert!(!stderr.contains("npm registry"), "no warning when the registry answers: {stderr}");
    assert_eq!(cyclonedx::validate(&file), json!({"valid": true}), "still valid CycloneDX 1.5");

    // The served versions, with when they were checked.
    for (name, version) in SERVED {
        let component = npm_component(&doc, name);
        assert_eq!(prop(component, "redtether:npm:latest"), Some(version), "{component}");
        let checked = humantime::parse_rfc3339(prop(component, "redtether:npm:latest_checked").unwrap()).unwrap();
        let checked = checked.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!((before..=unix_now()).contains(&checked), "{checked}");
        assert_eq!(prop(component, "redtether:npm:latest_stale"), None);
    }
    // A package the registry does not know: checked, but no latest version.
    let probe = npm_component(&doc, "node-red-contrib-sbom-probe");
    assert_eq!(prop(probe, "redtether:npm:latest"), None);
    assert!(prop(probe, "redtether:npm:latest_checked").is_some(), "{probe}");
    // Node.js is no npm package.
    let node = doc["components"].as_array().unwrap().iter().find(|c| c["name"] == "node").unwrap();
    assert!(node.get("properties").is_none(), "{node}");
    let metadata = &doc["metadata"];
    assert_eq!(prop(metadata, "redtether:npm:latest_source"), Some("live"));
    assert_eq!(prop(metadata, "redtether:npm:latest_registry"), Some(registry.url.trim_end_matches('/')));
    assert_eq!(prop(metadata, "redtether:npm:latest_cache_age"), None);
    assert_eq!(prop(metadata, "redtether:npm:latest_error"), None);

    // One request per npm package name, abbreviated documents asked for, scoped names as npm
    // writes them.
    let names: BTreeSet<String> = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["purl"].as_str().unwrap().starts_with("pkg:npm/"))
        .map(|c| match c["group"].as_str() {
            Some(group) => format!("{group}/{}", c["name"].as_str().unwrap()),
            None => c["name"].as_str().unwrap().to_string(),
        })
        .collect();
    let seen = registry.seen();
    assert!(names.len() > 300, "{}", names.len());
    assert_eq!(seen.len(), names.len(), "one request per name");
    let paths: BTreeSet<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths.len(), seen.len(), "no name asked twice");
    assert!(paths.contains("/npm/@node-red%2fruntime"), "{paths:?}");
    assert!(paths.contains("/npm/node-red"));
    for s in &seen {
        assert!(s.accept.as_deref().unwrap_or("").starts_with("application/vnd.npm.install-v1+json"), "{s:?}");
    }

    // The cache: private, the registry's answers by name.
    let cache_file = device.latest_cache();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cache_file).unwrap().permissions().mode() & 0o777, 0o600);
    let cache: Value = serde_json::from_slice(&std::fs::read(&cache_file).unwrap()).unwrap();
    assert_eq!(cache["registry"], registry.url.trim_end_matches('/'));
    assert_eq!(cache["packages"]["node-red"]["latest"], "99.0.0");
    assert_eq!(cache["packages"]["node-red-contrib-sbom-probe"]["latest"], Value::Null);
    assert_eq!(cache["packages"].as_object().unwrap().len(), names.len());

    // Within 24 h the cache answers: not one request.
    registry.forget();
    let (again, file, stderr) = device.sbom_latest(&registry.url);
    let asked: Vec<String> = registry.seen().into_iter().map(|s| s.path).collect();
    assert!(asked.is_empty(), "{} requests, e.g. {:?}", asked.len(), &asked[..asked.len().min(5)]);
    assert!(!stderr.contains("npm registry"), "{stderr}");
    for (name, version) in SERVED {
        assert_eq!(prop(npm_component(&again, name), "redtether:npm:latest"), Some(version));
    }
    assert_eq!(prop(&again["metadata"], "redtether:npm:latest_source"), Some("cache"));
    assert!(prop(&again["metadata"], "redtether:npm:latest_cache_age").is_some(), "{}", again["metadata"]);
    assert_eq!(cyclonedx::validate(&file), json!({"valid": true}));
}

#[test]
fn without_latest_the_registry_is_never_asked() {
    let registry = npm_registry::Registry::start(&SERVED);
    let device = Device::with_fixture_node_red();
    let out = device.sbom_with_registry(&[], &registry.url);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(components(&doc).contains_key(&format!("pkg:npm/node-red@{}", node_red::pinned_version())));
    assert_eq!(registry.seen().len(), 0);
    assert!(!doc.to_string().contains("redtether:npm:latest"), "no --latest, no annotation");
    assert!(!device.latest_cache().exists());
}

#[test]
fn an_unreachable_registry_leaves_cached_versions_marked_stale_and_the_document_valid() {
    let device = Device::with_fixture_node_red();
    let url = npm_registry::closed_port_url();
    let now = unix_now();
    let cache = json!({"registry": url, "packages": {
        "node-red": {"latest": "98.0.0", "checked": now - 3 * 24 * 3600},
        "express": {"latest": "5.9.9", "checked": now - 3600},
        "uninstalled-long-ago": {"latest": "1.0.0", "checked": now},
    }});
    std::fs::write(device.latest_cache(), cache.to_string()).unwrap();

    // It finished (exit 0) with a document, rather than waiting for the registry.
    let (doc, file, stderr) = device.sbom_latest(&url);
    assert!(stderr.contains(&format!("npm registry {url}")) && stderr.contains("cannot connect"), "{stderr}");
    assert!(stderr.contains("(1 of them stale, older than 24 h)"), "{stderr}");
    assert_eq!(cyclonedx::validate(&file), json!({"valid": true}));

    let node_red = npm_component(&doc, "node-red");
    assert_eq!(prop(node_red, "redtether:npm:latest"), Some("98.0.0"));
    assert_eq!(prop(node_red, "redtether:npm:latest_stale"), Some("true"), "a stale answer is marked");
    let express = npm_component(&doc, "express");
    assert_eq!(prop(express, "redtether:npm:latest"), Some("5.9.9"));
    assert_eq!(prop(express, "redtether:npm:latest_stale"), None, "a fresh one is not");
    assert!(npm_component(&doc, "@node-red/runtime").get("properties").is_none(), "never answered: nothing");
    let metadata = &doc["metadata"];
    assert_eq!(prop(metadata, "redtether:npm:latest_source"), Some("unavailable"));
    assert!(prop(metadata, "redtether:npm:latest_error").unwrap().contains("cannot connect"), "{metadata}");
    assert!(prop(metadata, "redtether:npm:latest_cache_age").unwrap().starts_with("3days"), "{metadata}");
    // Nothing new was learnt, so the cache is as it was.
    assert_eq!(serde_json::from_slice::<Value>(&std::fs::read(device.latest_cache()).unwrap()).unwrap(), cache);
}

/// A registry that takes connections and never answers costs one per-request timeout: the
/// first failure ends the lookups, so no worker connects a second time.
#[test]
fn a_registry_that_never_answers_ends_all_lookups_at_its_first_timeout() {
    let silent = npm_registry::Silent::start();
    let device = Device::with_fixture_node_red();
    let (doc, file, stderr) = device.sbom_latest(&silent.url);
    assert!(stderr.contains("did not answer within 5s"), "{stderr}");
    assert_eq!(prop(&doc["metadata"], "redtether:npm:latest_source"), Some("unavailable"));
    assert!(npm_component(&doc, "node-red").get("properties").is_none());
    let connections = silent.connections();
    assert!((1..=8).contains(&connections), "{connections} connections: lookups went on after the first failure");
    assert_eq!(cyclonedx::validate(&file), json!({"valid": true}));
}

/// `--latest` honours the proxy the environment names, as npm and curl do: a real forward proxy
/// (Debian's tinyproxy) in front of the stand-in registry carries every lookup (its log has the
/// requests, the registry sees its `Via` header), and `NO_PROXY` naming the registry's host
/// sends them past it.
#[test]
fn latest_goes_through_the_environments_proxy_and_no_proxy_bypasses_it() {
    let proxy = tinyproxy::Tinyproxy::start();
    let registry = npm_registry::Registry::start(&SERVED);
    let device = Device::with_fixture_node_red();
    let origin = registry.url.strip_suffix(npm_registry::PREFIX).unwrap();

    let (doc, _, stderr) = device.sbom_latest_with_env(&registry.url, &[("HTTP_PROXY", &proxy.url)]);
    assert!(!stderr.contains("npm registry"), "{stderr}");
    assert_eq!(prop(&doc["metadata"], "redtether:npm:latest_source"), Some("live"));
    for (name, version) in SERVED {
        assert_eq!(prop(npm_component(&doc, name), "redtether:npm:latest"), Some(version));
    }
    let seen = registry.seen();
    assert!(seen.len() > 300, "{}", seen.len());
    for s in &seen {
        assert!(s.via.as_deref().is_some_and(|via| via.contains(tinyproxy::VIA_NAME)), "not through the proxy: {s:?}");
    }
    // The proxy's own log: one forwarded request per lookup, in absolute form.
    let carried = proxy.requests();
    assert_eq!(carried.len(), seen.len(), "{:?}", &carried[..carried.len().min(5)]);
    for request in &carried {
        assert!(request.starts_with(&format!("GET {origin}/npm/")) && request.ends_with(" HTTP/1.1"), "{request}");
    }

    // NO_PROXY names the registry's host: straight there, the proxy sees nothing more.
    std::fs::remove_file(device.latest_cache()).unwrap();
    registry.forget();
    let (doc, _, stderr) =
        device.sbom_latest_with_env(&registry.url, &[("HTTP_PROXY", &proxy.url), ("NO_PROXY", "localhost,127.0.0.1")]);
    assert!(!stderr.contains("npm registry"), "{stderr}");
    assert_eq!(prop(&doc["metadata"], "redtether:npm:latest_source"), Some("live"));
    let seen = registry.seen();
    assert_eq!(seen.len(), carried.len(), "the same lookups again");
    assert!(seen.iter().all(|s| s.via.is_none()), "{:?}", seen.iter().find(|s| s.via.is_some()));
    assert_eq!(proxy.requests().len(), carried.len(), "NO_PROXY: the proxy carried nothing more");

    // A proxy that cannot be reached is a failed lookup like a registry that cannot be: the
    // command still succeeds, and says why.
    std::fs::remove_file(device.latest_cache()).unwrap();
    let closed = npm_registry::closed_port_url();
    let (doc, _, stderr) = device.sbom_latest_with_env(&registry.url, &[("http_proxy", &closed)]);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert_eq!(prop(&doc["metadata"], "redtether:npm:latest_source"), Some("unavailable"));
}

/// An https registry through `HTTPS_PROXY` (a CONNECT tunnel through tinyproxy), its
/// certificate checked against the system's CA certificates: a test CA the system's CA loader
/// is pointed at with `SSL_CERT_FILE` is trusted; without it the same registry is refused.
#[test]
fn latest_reaches_an_https_registry_through_the_proxy_and_checks_its_certificate() {
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(24 * 3600);
    let ca = redtether_pki::Ca::create(now, day).unwrap();
    let (cert, key) = ca.issue_server(&["127.0.0.1".to_string(), "localhost".to_string()], now, day).unwrap();
    let registry = npm_registry::Registry::start_tls(&SERVED, &format!("{cert}{}", ca.cert_pem), &key);
    assert!(registry.url.starts_with("https://127.0.0.1:"), "{}", registry.url);
    let proxy = tinyproxy::Tinyproxy::start();
    let device = Device::with_fixture_node_red();

    // The system's own CA certificates do not know the test CA: refused, nothing asked.
    let (doc, _, stderr) = device.sbom_latest_with_env(&registry.url, &[("HTTPS_PROXY", &proxy.url)]);
    assert!(stderr.contains("certificate"), "{stderr}");
    assert_eq!(prop(&doc["metadata"], "redtether:npm:latest_source"), Some("unavailable"));
    assert!(
        prop(&doc["metadata"], "redtether:npm:latest_error").unwrap().contains("UnknownIssuer"),
        "{}",
        doc["metadata"]
    );
    assert!(registry.seen().is_empty());
    let refused = proxy.requests().len();
    assert!(refused > 0, "the refused attempt went through the proxy too");

    let ca_file = device.dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let (doc, _, stderr) = device.sbom_latest_with_env(
        &registry.url,
        &[("HTTPS_PROXY", &proxy.url), ("SSL_CERT_FILE", ca_file.to_str().unwrap())],
    );
    assert!(!stderr.contains("npm registry"), "{stderr}");
    assert_eq!(prop(&doc["metadata"], "redtether:npm:latest_source"), Some("live"));
    for (name, version) in SERVED {
        assert_eq!(prop(npm_component(&doc, name), "redtether:npm:latest"), Some(version));
    }
    assert!(registry.seen().len() > 300);
    assert!(registry.seen().iter().all(|s| s.via.is_none()), "a tunnel: the proxy does not see inside");
    // The tunnels, all to the registry, each kept open for many lookups.
    let authority = registry.url.trim_start_matches("https://").split('/').next().unwrap().to_string();
    let tunnels = proxy.requests();
    assert!((refused + 1..refused + 50).contains(&tunnels.len()), "{tunnels:?}");
    for request in &tunnels {
        assert_eq!(request, &format!("CONNECT {authority} HTTP/1.1"), "{tunnels:?}");
    }
}
