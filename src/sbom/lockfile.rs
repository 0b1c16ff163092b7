//! The integrity hashes an npm lockfile (package-lock.json or node_modules/.package-lock.json,
//! lockfile versions 2 and 3) records for each installed location.

use serde_json::Value;
use std::collections::BTreeMap;

/// What the lockfile says is at one location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEntry {
    /// Set when the location holds an alias of another package.
    pub name: Option<String>,
    pub version: String,
    pub integrity: String,
}

impl LockEntry {
    /// Whether this entry describes the package actually installed there: a hash of another
    /// version (the lockfile is older than what was installed by hand) is no hash of this one.
    pub fn matches(&self, name: &str, version: &str) -> bool {
        self.version == version && self.name.as_deref().is_none_or(|n| n == name)
    }
}

/// The entries with an integrity, by location (`node_modules/...`). Lockfiles without a
/// `packages` section (version 1, from npm 6) give none.
pub fn entries(lock: &Value) -> BTreeMap<String, LockEntry> {
    let Some(packages) = lock["packages"].as_object() else {
        return BTreeMap::new();
    };
    packages
        .iter()
        .filter(|(location, _)| location.starts_with("node_modules/"))
        .filter_map(|(location, entry)| {
            Some((
                location.clone(),
                LockEntry {
                    name: entry["name"].as_str().map(str::to_string),
                    version: entry["version"].as_str()?.to_string(),
                    integrity: entry["integrity"].as_str()?.to_string(),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v3_packages_with_integrity() {
        let lock = json!({
            "lockfileVersion": 3,
            "packages": {
                "": {"name": "root", "dependencies": {"express": "4"}},
                "node_modules/express": {"version": "4.22.2", "integrity": "sha512-AAAA"},
                "node_modules/express/node_modules/qs": {"version": "6.14.0", "integrity": "sha512-BBBB"},
                "node_modules/npm/node_modules/abbrev": {"version": "3.0.1", "inBundle": true},
                "node_modules/alias": {"name": "real", "version": "1.0.0", "integrity": "sha1-CCCC"},
                "packages/workspace": {"version": "1.0.0", "integrity": "sha1-DDDD"}
            }
        });
        let e = entries(&lock);
        assert_eq!(
            e.keys().collect::<Vec<_>>(),
            ["node_modules/alias", "node_modules/express", "node_modules/express/node_modules/qs"]
        );
        assert_eq!(e["node_modules/express/node_modules/qs"].integrity, "sha512-BBBB");
        assert_eq!(e["node_modules/alias"].name.as_deref(), Some("real"));
    }

    #[test]
    fn an_entry_only_matches_the_package_it_describes() {
        let entry = LockEntry { name: None, version: "1.0.0".into(), integrity: "x".into() };
        assert!(entry.matches("a", "1.0.0"));
        assert!(!entry.matches("a", "1.0.1"));
        let alias = LockEntry { name: Some("real".into()), ..entry };
        assert!(alias.matches("real", "1.0.0"));
        assert!(!alias.matches("alias", "1.0.0"));
    }

    #[test]
    fn version_1_lockfiles_and_junk_give_nothing() {
        assert!(entries(&json!({"lockfileVersion": 1, "dependencies": {"a": {"version": "1.0.0"}}})).is_empty());
        assert!(entries(&json!([1, 2])).is_empty());
        assert!(entries(&json!({"packages": {"node_modules/a": "1.0.0"}})).is_empty());
    }
}
