//! An installed `node_modules` tree in memory, and how Node resolves `require(name)` in it.
//!
//! A package is known by its location below the tree's root, written as npm's lockfile writes
//! it: `node_modules/a`, `node_modules/a/node_modules/@s/b`. Node looks for a dependency of the
//! package at `L` in `L/node_modules/<name>`, then in the `node_modules` of each ancestor
//! package, up to the root's.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Why a package.json describes no package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("package.json is not a JSON object")]
    NotAnObject,
    #[error("package.json has a \"name\" that is not a string")]
    NameNotAString,
    #[error("package.json has no \"version\"")]
    NoVersion,
}

/// One installed package, from its package.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The package's own name (for an alias installed as `x`, the real name).
    pub name: String,
    pub version: String,
    /// The CycloneDX `licenses` array, when the package declares one.
    pub licenses: Option<Value>,
    /// `dependencies`: missing ones are worth a warning.
    pub dependencies: BTreeSet<String>,
    /// `optionalDependencies` and `peerDependencies`: used when installed.
    pub optional: BTreeSet<String>,
    /// A Node-RED module (package.json has a `node-red` section): Node-RED loads it.
    pub node_red_module: bool,
    /// The lockfile's `integrity` for this location and version, if any.
    pub integrity: Option<String>,
}

impl Package {
    /// Reads a parsed package.json. `dir_name` is the folder's name below `node_modules`, used
    /// when the manifest has no name. Errors say what is missing.
    pub fn from_manifest(dir_name: &str, manifest: &Value) -> Result<Package, ManifestError> {
        if !manifest.is_object() {
            return Err(ManifestError::NotAnObject);
        }
        let name = match &manifest["name"] {
            Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
            Value::Null => dir_name.to_string(),
            _ => return Err(ManifestError::NameNotAString),
        };
        let version = match &manifest["version"] {
            Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => return Err(ManifestError::NoVersion),
        };
        let names = |key: &str| -> BTreeSet<String> {
            manifest[key].as_object().map(|deps| deps.keys().cloned().collect()).unwrap_or_default()
        };
        let dependencies = names("dependencies");
        let mut optional = names("optionalDependencies");
        optional.extend(names("peerDependencies"));
        // npm lists optional dependencies under `dependencies` too; they are still optional.
        let dependencies = dependencies.difference(&optional).cloned().collect();
        Ok(Package {
            name,
            version,
            licenses: super::license::from_manifest(manifest),
            dependencies,
            optional,
            node_red_module: manifest.get("node-red").is_some_and(Value::is_object),
            integrity: None,
        })
    }

    /// The names this package may require: its dependencies, then its optional ones.
    pub fn wants(&self) -> impl Iterator<Item = (&str, bool)> {
        self.dependencies.iter().map(|n| (n.as_str(), true)).chain(self.optional.iter().map(|n| (n.as_str(), false)))
    }
}

/// The packages of one tree, by location.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub packages: BTreeMap<String, Package>,
}

impl Tree {
    pub fn insert(&mut self, location: impl Into<String>, package: Package) {
        self.packages.insert(location.into(), package);
    }

    pub fn get(&self, location: &str) -> Option<&Package> {
        self.packages.get(location)
    }

    /// The location `require(name)` finds from the package at `from` ("" is the root).
    pub fn resolve(&self, from: &str, name: &str) -> Option<&str> {
        let mut base = from;
        loop {
            let candidate = child_location(base, name);
            if let Some((location, _)) = self.packages.get_key_value(&candidate) {
                return Some(location);
            }
            if base.is_empty() {
                return None;
            }
            base = parent_location(base);
        }
    }

    /// Every location reachable from `start` through resolved dependencies, `start` included
    /// (those that are in the tree).
    pub fn closure<'a>(&'a self, start: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> =
            start.into_iter().filter_map(|l| self.packages.get_key_value(l)).map(|(l, _)| l.as_str()).collect();
        while let Some(location) = todo.pop() {
            if !seen.insert(location) {
                continue;
            }
            for (name, _) in self.packages[location].wants() {
                if let Some(next) = self.resolve(location, name)
                    && !seen.contains(next)
                {
                    todo.push(next);
                }
            }
        }
        seen
    }
}

/// `<base>/node_modules/<name>`, or `node_modules/<name>` at the root.
pub fn child_location(base: &str, name: &str) -> String {
    if base.is_empty() { format!("node_modules/{name}") } else { format!("{base}/node_modules/{name}") }
}

/// The location of the package whose `node_modules` holds `location` ("" for the root).
pub fn parent_location(location: &str) -> &str {
    location.rfind("/node_modules/").map_or("", |at| &location[..at])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pkg(name: &str, version: &str, deps: &[&str]) -> Package {
        let deps: serde_json::Map<String, Value> = deps.iter().map(|d| (d.to_string(), json!("*"))).collect();
        Package::from_manifest(name, &json!({"name": name, "version": version, "dependencies": deps})).unwrap()
    }

    /// The shape of the real fixture: express keeps its own qs and safe-buffer nested.
    fn tree() -> Tree {
        let mut t = Tree::default();
        t.insert("node_modules/node-red", pkg("node-red", "4.1.15", &["express", "@node-red/runtime"]));
        t.insert("node_modules/@node-red/runtime", pkg("@node-red/runtime", "4.1.15", &["express", "qs"]));
        t.insert("node_modules/express", pkg("express", "4.22.2", &["qs", "safe-buffer", "debug"]));
        t.insert("node_modules/express/node_modules/qs", pkg("qs", "6.14.0", &["side-channel"]));
        t.insert("node_modules/express/node_modules/safe-buffer", pkg("safe-buffer", "5.2.1", &[]));
        t.insert("node_modules/qs", pkg("qs", "6.15.0", &[]));
        t.insert("node_modules/safe-buffer", pkg("safe-buffer", "5.1.2", &[]));
        t.insert("node_modules/debug", pkg("debug", "2.6.9", &["ms"]));
        t.insert("node_modules/ms", pkg("ms", "2.0.0", &[]));
        t.insert("node_modules/side-channel", pkg("side-channel", "1.1.0", &[]));
        t.insert("node_modules/unused", pkg("unused", "1.0.0", &[]));
        t
    }

    #[test]
    fn own_nested_node_modules_come_first() {
        let t = tree();
        assert_eq!(t.resolve("node_modules/express", "qs"), Some("node_modules/express/node_modules/qs"));
        assert_eq!(t.resolve("node_modules/@node-red/runtime", "qs"), Some("node_modules/qs"));
    }

    #[test]
    fn then_each_ancestors_node_modules() {
        let t = tree();
        // express/node_modules/qs needs side-channel: not beside it, not in express's
        // node_modules, found at the root.
        assert_eq!(
            t.resolve("node_modules/express/node_modules/qs", "side-channel"),
            Some("node_modules/side-channel")
        );
        assert_eq!(
            t.resolve("node_modules/express/node_modules/qs", "safe-buffer"),
            Some("node_modules/express/node_modules/safe-buffer")
        );
        assert_eq!(t.resolve("node_modules/express", "missing"), None);
        assert_eq!(t.resolve("", "express"), Some("node_modules/express"));
    }

    #[test]
    fn scoped_locations_have_the_right_parent() {
        assert_eq!(parent_location("node_modules/@s/a/node_modules/b"), "node_modules/@s/a");
        assert_eq!(parent_location("node_modules/@s/a"), "");
        assert_eq!(
            parent_location("node_modules/a/node_modules/@s/b/node_modules/c"),
            "node_modules/a/node_modules/@s/b"
        );
        let mut t = Tree::default();
        t.insert("node_modules/@s/a", pkg("@s/a", "1.0.0", &["b"]));
        t.insert("node_modules/@s/a/node_modules/b", pkg("b", "2.0.0", &["@s/c"]));
        t.insert("node_modules/@s/c", pkg("@s/c", "1.0.0", &[]));
        assert_eq!(t.resolve("node_modules/@s/a", "b"), Some("node_modules/@s/a/node_modules/b"));
        assert_eq!(t.resolve("node_modules/@s/a/node_modules/b", "@s/c"), Some("node_modules/@s/c"));
    }

    #[test]
    fn closure_follows_resolution_and_leaves_out_what_nothing_needs() {
        let t = tree();
        let reached = t.closure(["node_modules/node-red"]);
        assert!(reached.contains("node_modules/express/node_modules/qs"));
        assert!(reached.contains("node_modules/qs"), "runtime's qs");
        assert!(reached.contains("node_modules/ms"));
        assert!(!reached.contains("node_modules/unused"));
        assert!(!reached.contains("node_modules/safe-buffer"), "only express needs safe-buffer, and has its own");
        assert_eq!(reached.len(), 9);
        assert!(t.closure(["node_modules/nothing-here"]).is_empty());
    }

    #[test]
    fn closure_ends_on_cycles() {
        let mut t = Tree::default();
        t.insert("node_modules/a", pkg("a", "1.0.0", &["b"]));
        t.insert("node_modules/b", pkg("b", "1.0.0", &["a"]));
        assert_eq!(t.closure(["node_modules/a"]).len(), 2);
    }

    #[test]
    fn manifest_fields() {
        let p = Package::from_manifest(
            "alias",
            &json!({
                "name": "real-name", "version": "1.2.3", "license": "MIT",
                "dependencies": {"a": "1", "opt": "1"},
                "optionalDependencies": {"opt": "1"},
                "peerDependencies": {"peer": "*"},
                "node-red": {"nodes": {}}
            }),
        )
        .unwrap();
        assert_eq!(p.name, "real-name");
        assert_eq!(p.dependencies, BTreeSet::from(["a".to_string()]));
        assert_eq!(p.optional, BTreeSet::from(["opt".to_string(), "peer".to_string()]));
        assert!(p.node_red_module);
        assert_eq!(p.licenses, Some(json!([{"license": {"id": "MIT"}}])));
        assert_eq!(p.wants().collect::<Vec<_>>(), [("a", true), ("opt", false), ("peer", false)]);
    }

    #[test]
    fn manifest_without_name_takes_the_folder_name() {
        let p = Package::from_manifest("folder", &json!({"version": "1.0.0"})).unwrap();
        assert_eq!(p.name, "folder");
        assert!(!p.node_red_module);
    }

    #[test]
    fn odd_manifests_are_refused_with_a_reason() {
        assert!(Package::from_manifest("x", &json!([])).unwrap_err().to_string().contains("not a JSON object"));
        assert!(Package::from_manifest("x", &json!({"name": "x"})).unwrap_err().to_string().contains("version"));
        assert!(
            Package::from_manifest("x", &json!({"name": 5, "version": "1"})).unwrap_err().to_string().contains("name")
        );
        assert!(Package::from_manifest("x", &json!({"version": 1})).unwrap_err().to_string().contains("version"));
        // Dependencies that are not an object are no dependencies, not an error.
        let p = Package::from_manifest("x", &json!({"version": "1", "dependencies": ["a"]})).unwrap();
        assert!(p.dependencies.is_empty());
    }
}
